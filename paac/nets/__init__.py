"""Layer 2: the networks (torsos and heads) and the convolution they use."""
