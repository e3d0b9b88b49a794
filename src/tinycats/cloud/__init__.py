"""The Modal cloud layer: the same training code on GPUs, with volumes, retries and snapshots.

Modules:
  resources      pure functions from TrainConfig to what Modal is asked for (testable offline)
  pricing        list prices with their date and sources, estimates, the bill of a call
  jobs           the bodies the Modal functions run, over Stores (tested with a fake volume)
  training       one call (slice) of a run, and how it ends the way Modal's runtime expects
  runner         Modal's retry, restart and continuation semantics run locally, for tests
  remote_volume  ls/get/put/rm on a volume through the SDK, with path validation
  modal_app      the Modal App itself (imports modal; loaded only by cloud commands)
  client         the local side: check, deploy, launch, bench
  calls          calls already made: follow a run, result, logs, cancel
"""
