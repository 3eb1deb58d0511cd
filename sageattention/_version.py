# The one place the version lives. PEP 440; compares >= 2.1.1 because diffusers checks that.
__version__ = "2.2.0.post1"
