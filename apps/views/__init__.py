"""Page code of the dashboard: one module per page, each with `render()` and pure helpers."""
