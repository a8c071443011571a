"""finetune_operator: the Kubernetes operator that turns a FineTuneJob into a finished fine-tune.

render (pure: spec -> ConfigMap, Service, ServiceAccount, PVC, Indexed Job) -> handlers (kopf, thin: create
what is absent, mirror Job/Pod state into status) -> status (pure: observed children -> phase, conditions).
`cluster` is the one module that talks to the Kubernetes API. No deep-learning libraries here: the operator image is slim.
"""
