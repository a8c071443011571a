"""The chart's monitoring artefacts, generated at build time (`make charts`): the Grafana dashboard and the alert rules.

Why apart from the operator: these are files the Helm chart ships, written once by a developer and checked in; the
operator never imports them at run time, and their generator needs grafana-foundation-sdk, a dev dependency the
operator image does not carry.
"""
