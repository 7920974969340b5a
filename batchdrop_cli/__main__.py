"""`python -m batchdrop_cli` is `batchdrop`."""
from batchdrop_cli.main import main

main()
