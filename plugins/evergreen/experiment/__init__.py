"""The A/B test between champion and challenger: its policy, its analysis (SRM, effect, sequential), its tasks."""
