"""Image generation service: text to image with local diffusers pipelines or a hosted API."""
