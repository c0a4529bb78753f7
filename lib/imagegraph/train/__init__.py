"""The training stage: labeled images through petastorm into Keras, exported as a model artifact.
`job.run_training` is the entry point."""
