"""Interactive figures: the only kexue_lib package that imports matplotlib and ipywidgets.

``frontends`` holds the machinery (Explorer, live, animate); one module per concept
(``projection``, ``rope``, ``gumbel``, ``entropy``, ...) exposes ``*_explorer(...)``.
"""
