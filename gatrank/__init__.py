"""gatrank: find out why a graph ranking model collapses to constant scores."""

__version__ = "0.1.0"
__all__ = ["__version__"]
