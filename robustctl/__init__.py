"""robustctl: Hydra-configured adversarial-robustness experiments (train, attack, detect, report).

Heavy dependencies (torch, mlflow) are imported lazily by the modules that need them, so
``robustctl --help`` and ``robustctl config`` stay fast.
"""

__version__ = "0.1.0"
