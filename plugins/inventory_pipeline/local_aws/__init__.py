"""The embedded default: a local AWS stack (moto for S3 + CloudWatch Logs, our SageMaker server)."""
