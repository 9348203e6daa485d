"""The salt viewer: masks, teacher latents vs. predictions, and loss curves in a Gradio page.

``callbacks`` holds what the page does as plain functions (no gradio import); ``app`` builds
the page and is what ``salt app`` starts.
"""
