"""The local runner: executes a CreateTrainingJob request on this machine under SageMaker's script-mode
contract, with the debugger hook configured, a real system profiler, our rule engine, CloudWatch logs and
outputs where SageMaker puts them."""
