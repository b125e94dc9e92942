"""The training job: job naming, code packaging and the CreateTrainingJob request."""
