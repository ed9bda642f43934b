"""All neural networks of faceanon as plain ``nn.Module``s, named after the papers' concepts.

Each submodule holds the networks of one paper or model family; state-dict names are stable
because shipped weights depend on them. Networks only, as rosinality's ``model.py``: nothing
here reads a file or the weights registry; ``faceanon.models`` builds them from the registry,
and the ``*_format`` modules convert other projects' published weights into them.
"""
