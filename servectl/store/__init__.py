"""The model store on disk, below both an instance and a release: what starting, rolling out and
archiving all read.

- ``versions``  the store's layout (NAME-VERSION.mar), each archive's card and test split, and
                the run folder's record of the loaded versions and the default
- ``digests``   each archive's sha256 as recorded at build, checked before TorchServe runs it
"""
