"""AWS access shared by the SageMaker commands (training's `launch-training`, serving's `deploy` and
`undeploy`): both import this package, neither imports the other."""
