"""``ddncodec bench``: rate–distortion, speed and memory of ddncodec against Pillow's
JPEG/WebP/AVIF, JPEG XL and published Kodak curves, all measured in one run.

Data flows one way: ``runner`` starts one ``worker`` process per codec (``codecs``),
which times every encode/decode and measures it (``metrics``); ``curves`` turns the
per-image rows into rate–distortion curves and BD-rates; ``report`` writes JSON,
Markdown and the plot.
"""
