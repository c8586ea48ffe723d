"""thaw: recommendation for users and items with little or no history."""

__version__ = "0.1.0"
