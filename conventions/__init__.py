"""Azure conventions that the app (shared/), the local functions host (devhost/) and the Batch
emulator (batchemu/) must all read the same way, each in one place:

* `conventions.connection`: how a Functions storage connection (``AzureWebJobsStorage`` and its
  ``__accountName`` / ``__blobServiceUri`` / ``__clientId`` / ``__credential`` forms) is resolved;
* `conventions.scrub`: what a secret looks like in text (SAS signatures, account keys, SharedKey
  and bearer authorization) and how it is removed.

A leaf package: standard library only, and it imports nothing from this repository. So every
other top-level package may import it without bending the one-way dependency rule (shared/ never
imports devhost/ or batchemu/, and they never import shared/).
"""
