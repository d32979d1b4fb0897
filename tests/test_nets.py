"""Network shapes of Table 1 at 32 and 64 px."""

import pytest
import torch

from pprl.model.nets import Decoder, Discriminator, Encoder, check_image_size


@pytest.mark.parametrize("size", [32, 64])
def test_shapes(size):
    enc, dec, disc = Encoder(size, 8, 16), Decoder(size, 8, 16, num_identities=5), Discriminator(size, 8, 5, 7)
    x = torch.randn(3, 3, size, size)
    mu, logvar = enc(x)
    assert mu.shape == logvar.shape == (3, 16)
    out = dec(mu, torch.tensor([0, 4, 2]))
    assert out.shape == x.shape and out.abs().max() <= 1
    d1, d2, d3 = disc(out)
    assert d1.shape == (3,) and d2.shape == (3, 5) and d3.shape == (3, 7)


def test_paper_widths_at_64px():
    enc, dec = Encoder(64, 32, 128), Decoder(64, 32, 128, num_identities=6)
    assert [m.out_channels for m in enc.trunk.modules() if isinstance(m, torch.nn.Conv2d)] == [32, 64, 128, 256]
    assert dec.fc.out_features == 2048  # 4 x 4 x 128, Table 1 row 1
    deconvs = [m.out_channels for m in dec.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert deconvs == [256, 128, 64, 3]
    assert enc.mu.out_features == 128


def test_decoder_accepts_one_hot_codes():
    dec = Decoder(32, 4, 8, num_identities=3).eval()
    f = torch.randn(2, 8)
    idx = torch.tensor([1, 2])
    torch.testing.assert_close(dec(f, idx), dec(f, torch.nn.functional.one_hot(idx, 3).float()))


@pytest.mark.parametrize("bad", [0, 8, 40, 65])
def test_image_size_must_be_multiple_of_16(bad):
    with pytest.raises(ValueError, match="image_size"):
        check_image_size(bad)
