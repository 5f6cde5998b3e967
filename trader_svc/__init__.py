"""The paper trader: PyTorch policy, hot model swap, paper execution against the recorded book."""
