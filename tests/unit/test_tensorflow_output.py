"""TensorFlow's own output kept out of the job's log: which stderr lines are dropped, and the
capture of file descriptor 2 around a conversion (what the native code writes there)."""
import os
import sys

import keras  # imported here, so TensorFlow's own start-up lines are not the tests' output
from keras.src.utils.io_utils import print_msg  # what the TF Lite conversion's export prints with

from imagegraph.model.tensorflow_output import quiet_tensorflow, without_noise

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "W0000 00:00:1796142643.274225   10762 tf_tfl_flatbuffer_helpers.cc:365] Ignored "
    "output_format.\n",
    "I0000 00:00:1796142643.300277   10762 mlir_graph_optimization_pass.cc:425] MLIR V1 "
    "optimization pass is not enabled\n",
    "I1201 16:24:32.844512   10762 port.cc:153] oneDNN custom operations are on.\n",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
]
KEPT = [
    "E0000 00:00:1796142643.300277   10762 converter.cc:12] could not legalize op\n",
    "F1201 16:24:32.844512   10762 check.cc:1] Check failed: ok\n",
    "Traceback (most recent call last):\n",
    "2026-12-01 16:24:32,844 ERROR imagegraph.infer.classify: read failed\n",
    "WARNING: a line of somebody else's\n",
]


def test_only_tensorflows_info_and_warning_lines_and_banners_are_dropped():
    assert without_noise("".join(NOISE + KEPT)) == "".join(KEPT)
    assert without_noise("".join(KEPT[:1] + NOISE + KEPT[1:])) == "".join(KEPT)


def test_what_reaches_file_descriptor_2_inside_is_written_back_without_noise(capfd):
    print("before", file=sys.stderr, flush=True)
    with quiet_tensorflow():
        for line in NOISE + KEPT:
            os.write(2, line.encode())  # as the converter's C++ code writes
        print_msg("Captures:\n  139941573261648: TensorSpec(shape=(), dtype=tf.resource)")
    print("after", file=sys.stderr, flush=True)
    out, err = capfd.readouterr()
    assert out == ""
    assert err == "before\n" + "".join(KEPT) + "after\n"
    assert keras.config.is_interactive_logging_enabled()


def test_the_capture_ends_when_the_block_raises(capfd):
    try:
        with quiet_tensorflow():
            os.write(2, KEPT[0].encode())
            raise ValueError("conversion failed")
    except ValueError:
        pass
    os.write(2, b"later\n")
    assert capfd.readouterr().err == KEPT[0] + "later\n"
