"""Per-epoch training checkpoints under the model's output URI, for `--resume` after a killed run.

    <output>/_checkpoints/last.keras   the model (with its optimizer) after the last epoch done
    <output>/_checkpoints/best.keras   the model of the epoch with the lowest held-out loss
    <output>/_checkpoints/state.json   `TrainingState`: epochs done, phase, history, best loss

Each epoch the models are written first and `state.json` last, so the state never names an
epoch whose model is not there (a kill between the two repeats that one epoch). Written by
whoever trains (the driver, or the chief of the Spark tasks training together), read back the
same way: boto3 for s3:// and s3a:// URIs, the local disk for file://. Removed once the model
is exported.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from imagegraph.config import S3Config
from imagegraph.errors import JobError
from imagegraph.storage.object_reader import ReaderSettings, s3_client

CHECKPOINT_DIR = "_checkpoints"
LAST_MODEL = "last.keras"
BEST_MODEL = "best.keras"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class TrainingState:
    """Where training stands after `epochs_done` epochs (counted over both phases); `phase`
    is 'head', 'fine_tune' or 'whole'; `history` holds per-epoch lists (epoch: its number, which
    skips the epochs of a phase that stopped early; loss, accuracy, val_loss, val_accuracy,
    seconds); `phase_stopped` is true when early stopping ended the phase;
    `images_trained` counts images over all workers."""

    epochs_done: int = 0
    phase: str = "head"
    phase_stopped: bool = False
    best_val_loss: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    images_trained: int = 0
    history: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainingState":
        return cls(**json.loads(text))


@dataclass(frozen=True)
class CheckpointStore:
    """The checkpoints of one model: `uri` is `<output>/_checkpoints` (s3://, s3a:// or
    file://); `s3` says how to reach S3 (picklable, so Spark tasks carry it)."""

    uri: str
    s3: S3Config

    @classmethod
    def under(cls, output_uri: str, s3: S3Config) -> "CheckpointStore":
        uri = f"{output_uri.rstrip('/')}/{CHECKPOINT_DIR}"
        if urlsplit(uri).scheme not in ("s3", "s3a", "file"):
            raise JobError(f"--output {output_uri}: training checkpoints need an s3://, s3a:// "
                           "or file:// output")
        return cls(uri, s3)

    def _s3_location(self, name: str) -> tuple[str, str] | None:
        parts = urlsplit(self.uri)
        if parts.scheme == "file":
            return None
        return parts.netloc, f"{parts.path.strip('/')}/{name}"

    def _client(self):
        return s3_client(ReaderSettings.from_config(self.s3, threads=2, max_bytes=0))

    def _local(self, name: str) -> str:
        return os.path.join(urlsplit(self.uri).path, name)

    def put(self, local_path: str, name: str) -> None:
        """Upload the local file `local_path` as `name`."""
        location = self._s3_location(name)
        if location is None:
            os.makedirs(os.path.dirname(self._local(name)), exist_ok=True)
            temporary = self._local(f".{name}.partial")
            shutil.copyfile(local_path, temporary)
            os.replace(temporary, self._local(name))
        else:
            self._client().upload_file(local_path, *location)

    def get(self, name: str, local_path: str) -> bool:
        """Download `name` to `local_path`; False when there is no such checkpoint file."""
        location = self._s3_location(name)
        if location is None:
            if not os.path.exists(self._local(name)):
                return False
            shutil.copyfile(self._local(name), local_path)
            return True
        from botocore.exceptions import ClientError
        try:
            self._client().download_file(*location, local_path)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                return False
            raise
        return True

    def save(self, directory: str, state: TrainingState, best_improved: bool) -> None:
        """Upload `directory`/last.keras (and best.keras when `best_improved`), then the state."""
        self.put(os.path.join(directory, LAST_MODEL), LAST_MODEL)
        if best_improved:
            self.put(os.path.join(directory, BEST_MODEL), BEST_MODEL)
        state_path = os.path.join(directory, STATE_FILE)
        with open(state_path, "w", encoding="utf-8") as handle:
            handle.write(state.to_json())
        self.put(state_path, STATE_FILE)

    def restore(self, directory: str) -> TrainingState | None:
        """The last saved state, with last.keras and best.keras downloaded into `directory`;
        None when nothing was saved."""
        state_path = os.path.join(directory, STATE_FILE)
        if not self.get(STATE_FILE, state_path):
            return None
        with open(state_path, encoding="utf-8") as handle:
            state = TrainingState.from_json(handle.read())
        for name in (LAST_MODEL, BEST_MODEL):
            if not self.get(name, os.path.join(directory, name)):
                raise JobError(f"checkpoint {self.uri}: {STATE_FILE} is there but {name} is "
                               "not; delete the checkpoints to start afresh")
        return state

    def clear(self) -> None:
        """Remove every checkpoint file."""
        location = self._s3_location("")
        if location is None:
            shutil.rmtree(urlsplit(self.uri).path, ignore_errors=True)
            return
        client = self._client()
        for name in (STATE_FILE, LAST_MODEL, BEST_MODEL):
            client.delete_object(Bucket=location[0], Key=location[1] + name)
