"""batchemu: a local Azure Batch emulator speaking the Batch REST API (api-version 2025-06-01).

Start it with ``python -m batchemu`` (see docs/emulator.md) or, from Python/tests, with
:class:`batchemu.process.EmulatorProcess`.
"""

__version__ = "0.1.0"

#: Well-known development account name (public, documented; like Azurite's devstoreaccount1).
DEFAULT_ACCOUNT = "devbatch"
#: Well-known development account key (public, documented; never use it for anything real).
DEFAULT_KEY = "sWfZNinS7c/+HePkwWO7R9B+6Jgo8O1HQqyqILDTiAELxSupoV7IBZ44f7He4gHCn8f5nHTtBs459qV6e2fKJw=="

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 10100
DEFAULT_DATA_DIR = ".devstack/batchemu"

__all__ = ["DEFAULT_ACCOUNT", "DEFAULT_KEY", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_DATA_DIR", "__version__"]
