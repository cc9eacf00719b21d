"""saebench: train, evaluate and compare sparse autoencoders on vision models, and reproduce SAE papers."""

__version__ = "0.1.0"
