"""The package's layers, bottom to top (issue 27): `unit/test_layers.py` checks the imports against them and
`integration/test_decision_path.py` the gate's calls at run time."""

# Bottom to top. A unit is a subpackage or a module at the package's root.
LAYERS = [
    "aws",  # clients, errors, S3 paths, prices, the call recorder
    "rules",  # our rule engine
    "guardrails",  # the deployment's limits
    "settings",  # one run's settings (Param > Variable > environment > default)
    "dataset",  # select, copy, split
    "reports",  # findings, policy, the HTML report
    "training",  # naming, packaging, the CreateTrainingJob request
    "decision",  # facts, decide, record, apply, announce
    "storage",  # housekeeping
    "local_aws",  # the embedded stack
    "airflow",  # operators, sensors, triggers, plugin, the tasks
    "demo",  # make demo
    "cli",  # inventory-pipeline
]


# The decision's own modules, bottom to top: one path (gate) over its steps, each step over what it records with.
DECISION_LAYERS = [
    {"comparison"},
    {"decide"},  # RunFacts, GateInputs, the pure decision and the record's shape
    {"lease", "registry", "lineage", "store"},
    {"facts", "apply", "announce"},  # the gate's steps
    {"gate"},
]
