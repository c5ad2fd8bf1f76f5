"""SimpleITK plumbing (monai_patcher/data/readers/itk.py): the useful line of an ITK error."""

from __future__ import annotations


def test_itk_error_message_drops_stale_os_reasons():
    from monai_patcher.data.readers.itk import itk_error_message

    err = RuntimeError(
        "Exception thrown in SimpleITK ImageFileReader_Execute: .../itkMetaImageIO.cxx:490:\n"
        "ITK ERROR: MetaImageIO(0x5639ec9a0e40): File cannot be read: /x/a.mha for reading.\n"
        "Reason: No such file or directory"
    )
    assert itk_error_message(err) == "File cannot be read: /x/a.mha for reading."
