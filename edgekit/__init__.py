"""edgekit: ship small, fast models to edge devices, with measured proof.

Importing the package stays light: torch and onnxruntime load only inside the
functions that need them, so `edgekit --help` starts instantly.
"""

__version__ = "0.1.0"
