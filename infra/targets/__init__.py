"""One module per platform, each rendering the same DeploymentSpec into that platform's resources."""
