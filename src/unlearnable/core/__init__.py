"""The bottom layer: what every other layer builds on, knowing nothing of datasets or models.

    errors      UnlearnableError, DataError, one_line: the one-line error contract
    files       atomic writes, JSON, put_in_place, leftovers of killed writes, refuse_overlap
    safe        bounded reads of untrusted files (.npy, .npz, images) before anything is allocated
    hashing     the one content hash: sha256_file, sha256_array, digest_json
    lock        advisory file locks (one audit per directory, one driver per store)
    params      typed parameters from `--param key=value` strings
    linalg      projection_basis: the row space of linear classifiers (ortho-proj, detect)
    registry    lookup in a name -> entry registry, with a one-line error
    progress    when a progress bar shows, and the one way to make one
    device      resolve_device: `--device` to a torch device
    provenance  versions() and now_iso(): what every artifact records
    process     pid_alive, host_tag, wait_interval
    malloc      glibc allocator thresholds for CPU training
    version     __version__
"""
