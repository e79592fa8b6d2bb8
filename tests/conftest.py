"""Shared pytest set-up: options for the built-book tests, the CUDA skip marker."""

from __future__ import annotations

import pathlib

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def pytest_addoption(parser):
    parser.addoption(
        "--nb-executed-dir",
        default=None,
        help="folder of notebooks executed by nbmake --overwrite (determinism test)",
    )
