"""The link stage: reference columns set from natural values (``linker``), and rows whose
reference is not loaded yet parked and retried (``parking``)."""
