"""The Modal cloud layer: the same training code on GPUs, with volumes, retries and snapshots.

Modules:
  resources      pure functions from TrainConfig to what Modal is asked for (testable offline)
  jobs           the bodies the Modal functions run, over Stores (tested with a fake volume)
  runner         Modal's retry semantics run locally, for tests
  remote_volume  ls/get/put/rm on a volume through the SDK, with path validation
  modal_app      the Modal App itself (imports modal; loaded only by cloud commands)
  client         the local side: deploy, call, spawn, fetch results, bench
"""
