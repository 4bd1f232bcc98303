"""A lab's own models, used by influence-lab through `plugins: [mylab]`."""
