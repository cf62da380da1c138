"""The demo scenario, the traffic simulator and the report: not imported by the platform (`python -m evergreen_demo`)."""
