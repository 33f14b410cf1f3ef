"""gst-qoe model bundles: format, exporters, PyTorch reference and test fixtures."""
