"""Data preparation for the CMI study: raw logs or a synthetic world -> a prepared folder.

One module per source (`synthetic`, `kuairand`, `wechat`, `csv_source`, each with a
`prepare_<source>` function), the shared filters and day split in `split`, item categories in
`catalog`, the fingerprinted, atomic folder writer in `core`, and the command line in
`__main__` (`python -m data_prep --help`). The folder format is described in the project's
brief and read back by `cmi.data.load_dataset`. Nothing here imports torch.
"""
