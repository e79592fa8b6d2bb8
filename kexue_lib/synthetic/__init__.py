"""Synthetic data with planted structure, for chapters, widgets and tests (never imported by L1-L3).

Modules: ``vectors`` (point clouds), ``sequences`` (copy-at-offset tokens), ``distributions``
(densities with an exact log-likelihood). Import them by name:
``from kexue_lib.synthetic.vectors import point_cloud``.
"""

__all__: list[str] = []
