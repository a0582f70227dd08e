"""The model core: loading, tokens, answer scoring, the one forward/hook layer, backends."""
