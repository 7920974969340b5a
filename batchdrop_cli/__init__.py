"""The `batchdrop` command: a client of batchdrop's user contract (the intake container and the
results layout), for the local stack and deployments alike. Entry point: `batchdrop_cli.main:main`."""

__version__ = "0.1.0"
