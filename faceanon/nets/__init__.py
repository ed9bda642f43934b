"""All neural networks of faceanon as plain ``nn.Module``s, named after the papers' concepts.

Each submodule holds the networks of one paper or model family; state-dict names are stable
because shipped weights depend on them.
"""
