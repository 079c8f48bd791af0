"""A small vectorised z-buffered triangle rasterizer in pure torch (CPU), plus mesh builders.

No compiled extensions: every step is a batched tensor operation, so a batch of a few dozen
to a few hundred images is rasterized with a constant number of torch calls.

Algorithm (per batch of ``B`` meshes sharing one triangle list of ``T`` faces):

1. gather the three screen-space vertices of every triangle, ``(B, T, 3, 2)``; drop
   back-facing (signed area >= 0 with image ``y`` pointing down, outward-wound meshes) and
   off-screen triangles;
2. split every kept triangle into scanline spans (one per pixel row whose centre it covers),
   solving each span's exact ``[x_lo, x_hi]`` from the triangle's long edge and the short
   edge of that row (``repeat_interleave`` over rows, no padding), widened by 1e-4 px so
   shared edges overlap rather than crack;
3. expand spans into fragments (one per covered pixel centre) with a second
   ``repeat_interleave``; depth is linear along a span;
4. z-buffer with one ``scatter_reduce(..., "amin")`` of int64 keys ``depth_q << 26 | span``:
   the nearest fragment wins, ties are broken by span (hence triangle) order, so the result
   is exact and deterministic (no float atomics);
5. re-evaluate the barycentrics of the winning triangle at every covered pixel centre and
   interpolate vertex attributes there (screen-space linear interpolation; the camera is far
   enough that perspective correction is below a pixel's worth).

Pixel centres are at ``(j + 0.5, i + 0.5)`` in the continuous screen coordinates used here
(``x`` = column, ``y`` = row, both pointing right/down, origin at the image's top-left corner).
Anti-aliasing: with ``samples=s`` the z-buffer is ``s`` times finer than the output and the
result is multi-sampled (per output pixel coverage + nearest triangle), see :func:`rasterize`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_TRI_BITS = 26  # z-buffer key = depth (30 bits) << 26 | span index
_TRI_MASK = (1 << _TRI_BITS) - 1
_DEPTH_LEVELS = (1 << 30) - 1
_EMPTY = torch.iinfo(torch.int64).max


@dataclass
class Raster:
    """Result of :func:`rasterize` for a batch: only the covered pixels are listed.

    pix:   (N,) int64 flat pixel index into ``B * S * S`` (row-major ``b, y, x``; S = output size)
    tri:   (N,) int64 flat triangle index into ``B * T`` (``b * T + t``)
    bary:  (N, 3) float barycentric coordinates of the pixel centre in that triangle
    batch, size, n_faces: B, S, T
    """

    pix: torch.Tensor
    tri: torch.Tensor
    bary: torch.Tensor
    batch: int
    size: int
    n_faces: int
    coverage: torch.Tensor | None = None  # (N,) sub-sample coverage in (0, 1] (multi-sample only)

    def mask(self) -> torch.Tensor:
        """(B, S, S) float coverage (sub-sample fraction, or 1 where a triangle covers the centre)."""
        m = torch.zeros(self.batch * self.size * self.size)
        m[self.pix] = 1.0 if self.coverage is None else self.coverage
        return m.view(self.batch, self.size, self.size)


def rasterize(
    screen: torch.Tensor,
    faces: torch.Tensor,
    size: int,
    depth_range: tuple[float, float] = (0.0, 100.0),
    cull_backfaces: bool = True,
    samples: int = 1,
) -> Raster:
    """Z-buffer ``B`` meshes into ``size x size`` images.

    With ``samples = s > 1`` the z-buffer is ``(s * size)^2`` (``screen`` must be given in
    those sub-pixel coordinates) and the result is per *output* pixel (multi-sample
    anti-aliasing): ``coverage`` = fraction of its s x s sub-samples covered, the winning
    triangle = the nearest among its covered sub-samples, barycentrics evaluated at the output
    pixel centre in that triangle's plane (clamped to the triangle).

    screen: (B, V, 3) float, ``x, y`` in pixels (see module doc) and ``z`` = depth (smaller is
            nearer the camera; values are clamped to ``depth_range`` for the z-buffer keys)
    faces:  (T, 3) int64 vertex indices, wound so that (v1 - v0) x (v2 - v0) points outwards
    returns a :class:`Raster` listing the covered pixels with their winning triangle.

    Scanline enumeration: for every kept triangle, every pixel row whose centre lies in its
    vertical extent becomes a "span" whose exact ``[x_lo, x_hi]`` pixel range is solved from
    the three edge functions; spans expand to (triangle, pixel) fragments with
    ``repeat_interleave``, so the work is proportional to the covered area, not to bounding
    boxes. Spans are widened by 1e-4 px so shared edges overlap rather than crack.
    """
    B, V, _ = screen.shape
    T = faces.shape[0]
    S = int(size)
    if B * T > _TRI_MASK:
        raise ValueError(f"too many triangles in one batch ({B}x{T}); render in smaller batches")
    tv = screen[:, faces].reshape(B * T, 3, 3)  # (BT, 3 verts, xyz)
    e1 = tv[:, 1] - tv[:, 0]
    e2 = tv[:, 2] - tv[:, 0]
    area = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]  # signed
    ys = tv[:, :, 1]
    ymin = torch.ceil(ys.amin(1) - 0.5).clamp_(min=0)
    ymax = torch.floor(ys.amax(1) - 0.5).clamp_(max=S - 1)
    xs = tv[:, :, 0]
    keep = (ymax >= ymin) & (xs.amax(1) >= 0) & (xs.amin(1) <= S) & (area.abs() > 1e-12)
    keep &= (area < 0) if cull_backfaces else torch.ones_like(keep)
    sel = keep.nonzero().squeeze(1)  # (K,) flat ids b * T + t
    empty = torch.zeros(0, dtype=torch.int64)
    if sel.numel() == 0:
        return Raster(empty, empty, torch.zeros(0, 3), B, S // int(samples), T,
                      torch.zeros(0) if samples > 1 else None)
    inv = 1.0 / area[sel]
    x0, y0 = tv[sel, 0, 0], tv[sel, 0, 1]
    # l1 = qx * a1 + qy * b1, l2 = qx * a2 + qy * b2 with q = p - v0; l0 = 1 - l1 - l2
    a1, b1 = e2[sel, 1] * inv, -e2[sel, 0] * inv
    a2, b2 = -e1[sel, 1] * inv, e1[sel, 0] * inv
    z0, dz1, dz2 = tv[sel, 0, 2], e1[sel, 2], e2[sel, 2]
    tab = torch.stack([x0, y0, a1, b1, a2, b2, z0, dz1, dz2], 1)  # (K, 9)

    # ---- per-triangle scanline table: the long edge (top -> bottom vertex) bounds one side of
    # every span, the two short edges (top -> mid, mid -> bottom) the other side
    vy = tv[sel, :, 1]
    order = vy.argsort(1)
    sv = torch.gather(tv[sel, :, :2], 1, order.unsqueeze(2).expand(-1, -1, 2))  # (K, 3, 2) top, mid, bottom
    xt, yt, xm, ym, xb, yb = sv[:, 0, 0], sv[:, 0, 1], sv[:, 1, 0], sv[:, 1, 1], sv[:, 2, 0], sv[:, 2, 1]

    def slope(xa, ya, xc, yc):
        dy = yc - ya
        return torch.where(dy > 1e-9, (xc - xa) / dy.clamp(min=1e-9), torch.zeros_like(dy))

    sl, s1, s2 = slope(xt, yt, xb, yb), slope(xt, yt, xm, ym), slope(xm, ym, xb, yb)
    zx = a1 * dz1 + a2 * dz2  # depth gradient in x and y
    zy = b1 * dz1 + b2 * dz2
    za = z0 - x0 * zx - y0 * zy
    span_tab = torch.stack([xt - yt * sl, sl, xt - yt * s1, s1, xm - ym * s2, s2, ym, za, zx, zy], 1)  # (K, 10)

    # ---- spans: one per (triangle, pixel row)
    K = sel.numel()
    kb = torch.div(sel, T, rounding_mode="floor")  # image of each kept triangle
    ymin_k = ymin[sel].long()
    h = ymax[sel].long() - ymin_k + 1
    R = int(h.sum())
    if R > _TRI_MASK:
        raise ValueError(f"too many spans in one batch ({R}); render in smaller batches")
    rtri = torch.repeat_interleave(torch.arange(K), h, output_size=R)  # (R,) index into sel
    rstart = torch.cumsum(h, 0) - h
    brow = (kb * S + ymin_k - rstart)[rtri] + torch.arange(R)  # b * S + pixel row
    yc = (brow % S).to(screen.dtype) + 0.5
    t = span_tab[rtri]  # (R, 10)
    xl = t[:, 0] + yc * t[:, 1]
    xs = torch.where(yc < t[:, 6], t[:, 2] + yc * t[:, 3], t[:, 4] + yc * t[:, 5])
    xlo = torch.ceil(torch.minimum(xl, xs) - 0.5 - 1e-4).clamp_(min=0)
    xhi = torch.floor(torch.maximum(xl, xs) - 0.5 + 1e-4).clamp_(max=S - 1)
    cnt = (xhi - xlo + 1).clamp_(min=0).long()
    # depth along the row: z(x) = z_row0 + dzdx * x at pixel index x (centre x + 0.5)
    dzdx = t[:, 8]
    zrow0 = t[:, 7] + t[:, 9] * yc + dzdx * 0.5
    fstart = torch.cumsum(cnt, 0) - cnt
    pixbase = brow * S + xlo.long() - fstart  # + global fragment number = flat pixel index
    flts = torch.stack([zrow0, dzdx], 1)  # (R, 2)
    # ---- fragments: one per (span, pixel); the z-buffer key carries the span index
    P = int(cnt.sum())
    rep = torch.repeat_interleave(torch.arange(R), cnt, output_size=P)
    pix = pixbase[rep] + torch.arange(P)
    fr = flts[rep]
    z = fr[:, 0] + fr[:, 1] * (pix % S).to(screen.dtype)
    lo_d, hi_d = depth_range
    zq = ((z - lo_d) * (_DEPTH_LEVELS / (hi_d - lo_d))).clamp_(0, _DEPTH_LEVELS).long()
    key = (zq << _TRI_BITS) | rep
    zbuf = torch.full((B * S * S,), _EMPTY, dtype=torch.int64)
    zbuf.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)
    s = int(samples)
    if s > 1:
        if S % s:
            raise ValueError("raster size must be a multiple of samples")
        O = S // s
        # min / count over each s x s block with elementwise ops on strided slices (much faster
        # than amin over non-contiguous dims)
        rows = zbuf.view(B, O, s, S)
        zr = rows[:, :, 0]
        for i in range(1, s):
            zr = torch.minimum(zr, rows[:, :, i])
        hit = (rows != _EMPTY).to(torch.uint8).sum(2, dtype=torch.int32).view(B, O, O, s)  # (B, O, O, s)
        zc = zr.reshape(B, O, O, s)
        zbuf = zc[..., 0]
        for i in range(1, s):
            zbuf = torch.minimum(zbuf, zc[..., i])
        zbuf = zbuf.reshape(-1)
        cover = hit.sum(3).view(-1).to(screen.dtype) / (s * s)
    else:
        O = S
        cover = None
    covered = (zbuf != _EMPTY).nonzero().squeeze(1)
    kk = rtri[zbuf[covered] & _TRI_MASK]  # winning span -> index into sel / tab
    tk = tab[kk]
    qx = ((covered % O).to(screen.dtype) + 0.5) * s - tk[:, 0]
    qy = ((torch.div(covered, O, rounding_mode="floor") % O).to(screen.dtype) + 0.5) * s - tk[:, 1]
    l1 = qx * tk[:, 2] + qy * tk[:, 3]
    l2 = qx * tk[:, 4] + qy * tk[:, 5]
    bary = torch.stack([1.0 - l1 - l2, l1, l2], 1).clamp_(0.0, 1.0)
    bary = bary / bary.sum(1, keepdim=True).clamp_(min=1e-12)
    return Raster(covered, sel[kk], bary, B, O, T, None if cover is None else cover[covered])


def interpolate(raster: Raster, faces: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes at the covered pixels.

    attrs: (B, V, C) -> returns (N, C) aligned with ``raster.pix``.
    """
    B, V, C = attrs.shape
    T = raster.n_faces
    b = torch.div(raster.tri, T, rounding_mode="floor")
    t = raster.tri - b * T
    vid = faces[t] + (b * V).unsqueeze(1)  # (N, 3)
    flat = attrs.reshape(B * V, C)
    w = raster.bary
    out = flat[vid[:, 0]] * w[:, 0:1]
    out.addcmul_(flat[vid[:, 1]], w[:, 1:2])
    out.addcmul_(flat[vid[:, 2]], w[:, 2:3])
    return out


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals. verts: (B, V, 3) -> (B, V, 3)."""
    v = verts[:, faces]  # (B, T, 3, 3)
    fn = torch.cross(v[:, :, 1] - v[:, :, 0], v[:, :, 2] - v[:, :, 0], dim=2)  # (B, T, 3)
    n = torch.zeros_like(verts)
    for k in range(3):
        n.index_add_(1, faces[:, k], fn)
    return F.normalize(n, dim=2, eps=1e-8)


def downsample(img: torch.Tensor, factor: int) -> torch.Tensor:
    """Box-filter anti-aliasing: (B, C, S*f, S*f) -> (B, C, S, S)."""
    if factor == 1:
        return img
    return F.avg_pool2d(img, factor)


# --------------------------------------------------------------------------- mesh builders


def warped_sphere(n_lat: int = 28, n_az: int = 48, az_linear: float = 0.4, lat_linear: float = 0.5):
    """A UV sphere whose rings/segments are denser near the front (+z) and the equator.

    Azimuth ``a`` (0 = +z, the face direction, positive towards +x) and latitude ``phi``
    (positive up, +y) are warped by ``s -> c s + (1 - c) s^3`` so the face region gets about
    2.5x the density of the back of the head. Returns ``(dirs (V, 3) unit vectors, faces (T, 3))``
    wound outwards. Rows: two poles plus ``n_lat`` rings of ``n_az`` vertices.
    """
    s = (torch.arange(n_lat, dtype=torch.float64) + 0.5) / n_lat * 2 - 1  # (-1, 1)
    phi = (math.pi / 2) * (lat_linear * s + (1 - lat_linear) * s**3) * (1 - 0.5 / n_lat)
    t = torch.arange(n_az, dtype=torch.float64) / n_az * 2 - 1  # [-1, 1)
    az = math.pi * (az_linear * t + (1 - az_linear) * t**3)
    P, A = torch.meshgrid(phi, az, indexing="ij")
    ring = torch.stack([P.cos() * A.sin(), P.sin(), P.cos() * A.cos()], -1).reshape(-1, 3)
    south = torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64)
    north = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    dirs = torch.cat([south, ring, north], 0)
    faces = []

    def vid(i, j):  # ring i (0 = lowest), segment j
        return 1 + i * n_az + (j % n_az)

    for j in range(n_az):
        faces.append((0, vid(0, j + 1), vid(0, j)))
    for i in range(n_lat - 1):
        for j in range(n_az):
            a, b, c, d = vid(i, j), vid(i, j + 1), vid(i + 1, j + 1), vid(i + 1, j)
            faces.append((a, b, c))
            faces.append((a, c, d))
    top = 1 + n_lat * n_az
    for j in range(n_az):
        faces.append((vid(n_lat - 1, j), vid(n_lat - 1, j + 1), top))
    faces = torch.tensor(faces, dtype=torch.int64)
    return _fix_winding(dirs.float(), faces)


def _fix_winding(verts: torch.Tensor, faces: torch.Tensor):
    """Flip faces whose normal points towards the centroid (meshes here are star-shaped)."""
    v = verts[faces]
    n = torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=1)
    c = v.mean(1) - verts.mean(0)
    flip = (n * c).sum(1) < 0
    faces = faces.clone()
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return verts, faces
