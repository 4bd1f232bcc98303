from .dataset import DataBundle, load_data

__all__ = ["DataBundle", "load_data"]
