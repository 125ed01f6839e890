"""How a proxy is saved and loaded: SB3 checkpoints, the pickle-free proxy folder, export and its model card."""
