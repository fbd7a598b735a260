"""The scene zoo's scenes: seeded draws over named axes, before anything is rendered.

A scene is a recording studio-sep was not tuned on: another room, other instruments, other
mics, and a manifest that describes the recording imperfectly (coordinates typed by hand,
mic patterns written down wrong). :func:`draw_scene` is pure and deterministic: scene ``i``
of zoo seed ``s`` is always the same. Every axis value is reached within the first
``len(values)`` scenes of that axis: each axis walks through seeded permutations of its
values, one step per scene and a new permutation per pass, so a zoo of N scenes is balanced
on every axis and no two axes move in lockstep.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from studio_sep.dsp.geometry import aim_angles

#: The axes and their values, in the order they are drawn.
AXES: dict[str, tuple] = {
    "room_size": ("small", "medium", "large"),
    "rt60": ("0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"),
    "patterns": ("omni", "mixed", "omni_typed_cardioid", "mixed_typed_omni"),
    "position_error_cm": (0, 5, 20),
    "n_sources": (2, 3, 4, 5),
    "spot_mics": ("yes", "no"),
    "layout": ("pair", "main", "wide"),
    "material": ("gm", "with_speech"),
    "soundfont": ("FluidR3", "TimGM6mb", "MuseScore"),
    "snr_db": (30, 45, 60),
    "sample_rate": (44100, 48000),
    "rt60_in_manifest": ("yes", "no"),
}
VOLUME_M3 = {"small": (40.0, 90.0), "medium": (90.0, 200.0), "large": (200.0, 400.0)}
#: General MIDI instruments of the zoo (0-based programs) and the prompt a user would type.
INSTRUMENTS: dict[str, tuple[int, str]] = {
    "violin": (40, "violin"), "sax": (66, "tenor saxophone"), "piano": (0, "piano"), "cello": (42, "cello"),
    "flute": (73, "flute"), "trumpet": (56, "trumpet"), "clarinet": (71, "clarinet"),
    "guitar": (24, "nylon guitar"), "bass": (32, "double bass"),
}
SPEECH_PROMPT = "speech"
#: Mixed patterns as in the paper's session: cardioid main mics, figure-8 spots, cardioid room mics.
MIXED = {"main": "cardioid", "spot": "figure8", "room": "cardioid"}
ZOO_SEED = 20261201


@dataclass(frozen=True)
class ZooMic:
    """A mic as recorded (``pattern``) and as the manifest will say (``typed_*``)."""

    name: str
    role: str  #: main, spot, room
    position_m: tuple[float, float, float]
    pattern: str
    aim_azimuth_deg: float
    aim_elevation_deg: float
    typed_position_m: tuple[float, float, float]
    typed_pattern: str


@dataclass(frozen=True)
class ZooSource:
    name: str
    kind: str  #: gm or speech
    program: int | None
    prompt: str
    position_m: tuple[float, float, float]
    typed_position_m: tuple[float, float, float]
    spot_mic: str | None


@dataclass(frozen=True)
class Scene:
    """One zoo session, drawn: every axis value and every number the render needs."""

    index: int
    seed: int
    axes: dict
    dimensions_m: tuple[float, float, float]
    rt60_s: float
    sample_rate: int
    snr_db: float
    soundfont: str
    mics: tuple[ZooMic, ...]
    sources: tuple[ZooSource, ...]
    instruments: tuple[str, ...] | None = None  #: the pool the instruments were drawn from (None: all of INSTRUMENTS)

    @property
    def name(self) -> str:
        pool = f"_{'-'.join(self.instruments)}" if self.instruments else ""
        return f"zoo_{self.seed}_{self.index:03d}{pool}"

    def to_dict(self) -> dict:
        d = asdict(self) | {"name": self.name}
        if self.instruments is None:  # the whole zoo: the record (and render cache key) it always had
            del d["instruments"]
        return d


def axis_values(index: int, seed: int = ZOO_SEED) -> dict:
    """The axis values of scene ``index``: a balanced walk through each axis's values."""
    values = {}
    for a, (axis, choices) in enumerate(AXES.items()):
        # a fresh permutation per block of len(choices) scenes and per axis: every value once a
        # block, and axes of the same length are not walked in lockstep (no confounded axes)
        order = np.random.default_rng([seed, 7919, a, index // len(choices)]).permutation(len(choices))
        values[axis] = choices[int(order[index % len(choices)])]
    if values["layout"] == "pair":  # a stereo pair alone separates two sources, and has no spot mics
        values["n_sources"], values["spot_mics"] = 2, "no"
    return values


def _room(rng: np.random.Generator, size: str) -> tuple[float, float, float]:
    volume = rng.uniform(*VOLUME_M3[size])
    height = rng.uniform(2.5, 4.5 if size == "large" else 3.2)
    ratio = rng.uniform(1.0, 2.0)  # length / width
    width = math.sqrt(volume / height / ratio)
    return (round(width * ratio, 3), round(width, 3), round(height, 3))


def _inside(p, dims, margin: float = 0.5) -> tuple[float, float, float]:
    return tuple(float(min(max(v, margin), d - margin)) for v, d in zip(p, dims))


def _sources(rng, values, dims, stage_m, pool: tuple[str, ...]) -> list[tuple[str, str, int | None, str, tuple]]:
    n = int(values["n_sources"])
    drawn = list(rng.permutation(list(pool)))
    names = (drawn * -(-n // len(drawn)))[:n]  # a pool smaller than the scene: its instruments again, in order
    kinds = ["gm"] * n
    if values["material"] == "with_speech":
        kinds[int(rng.integers(n))] = "speech"
    out, used = [], set()
    for k in range(n):
        angle = -0.9 + 1.8 * (k + rng.uniform(0.2, 0.8)) / n  # a fan across the stage
        radius = rng.uniform(1.2, 2.2)
        p = _inside((stage_m[0] + radius * math.cos(angle), stage_m[1] + radius * math.sin(angle),
                     rng.uniform(0.6, 1.4)), dims, 0.6)
        if kinds[k] == "speech":
            name = f"voice{k + 1}"
            out.append((name, "speech", None, SPEECH_PROMPT, p))
        else:
            name = names[k] if names[k] not in used else f"{names[k]}{k + 1}"
            out.append((name, "gm", INSTRUMENTS[names[k]][0], INSTRUMENTS[names[k]][1], p))
        used.add(name)
    return out


def _mics(rng, values, dims, stage_m, sources) -> list[tuple[str, str, tuple, tuple]]:
    """(name, role, position, aimed at) of every mic."""
    centre = np.mean([s[4] for s in sources], axis=0)
    main = (stage_m[0] - rng.uniform(0.0, 0.6), stage_m[1] + rng.uniform(-0.3, 0.3), rng.uniform(1.5, 2.2))
    mics = []
    if values["layout"] == "pair":  # near-coincident pair (ORTF-like: 17 cm, ±55°)
        for side, dy in (("l", 0.085), ("r", -0.085)):
            mics.append((f"pair_{side}", "main", (main[0], main[1] + dy, main[2]), ("angle", 55.0 if side == "l" else -55.0)))
        return mics
    for side, dz in (("l", 0.02), ("c", 0.0), ("r", -0.02)):  # the paper's vertical near-coincident trio
        angle = {"l": 60.0, "c": 0.0, "r": -60.0}[side]
        mics.append((f"main_{side}", "main", (main[0], main[1], main[2] + dz), ("angle", angle)))
    far = _inside((main[0] - rng.uniform(1.5, 3.0), main[1] + rng.uniform(-0.5, 0.5), rng.uniform(1.8, 2.6)), dims)
    mics.append(("room_1", "room", far, ("point", tuple(centre))))
    if values["layout"] == "wide":
        for k, dy in enumerate((1.2, -1.2)):
            p = _inside((main[0] + rng.uniform(0.5, 1.2), main[1] + dy, rng.uniform(1.4, 2.0)), dims)
            mics.append((f"outrigger_{k + 1}", "room", p, ("point", tuple(centre))))
        p = _inside((far[0] - 0.5, far[1] + rng.uniform(-1.0, 1.0), far[2] + 0.3), dims)
        mics.append(("room_2", "room", p, ("point", tuple(centre))))
    if values["spot_mics"] == "yes":
        for s in sources:
            d = rng.uniform(0.35, 0.7)
            direction = np.array([stage_m[0] - s[4][0], stage_m[1] - s[4][1], 0.0])
            direction /= max(np.linalg.norm(direction), 1e-9)
            p = _inside(np.array(s[4]) + d * direction + np.array([0.0, 0.0, rng.uniform(0.3, 0.8)]), dims, 0.3)
            mics.append((f"spot_{s[0]}", "spot", p, ("point", s[4])))
    return mics[:12]


def _pattern(values: dict, role: str) -> tuple[str, str]:
    """(recorded pattern, pattern the manifest says)."""
    mixed = MIXED[role]
    return {"omni": ("omni", "omni"), "mixed": (mixed, mixed), "omni_typed_cardioid": ("omni", "cardioid"),
            "mixed_typed_omni": (mixed, "omni")}[values["patterns"]]


def _typo(rng: np.random.Generator, p, sigma_m: float, dims) -> tuple[float, float, float]:
    if sigma_m == 0:
        return tuple(float(v) for v in p)
    return _inside(np.asarray(p) + rng.normal(0.0, sigma_m, 3), dims, 0.05)


def draw_scene(index: int, seed: int = ZOO_SEED, instruments: tuple[str, ...] | None = None) -> Scene:
    """Scene ``index`` of the zoo ``seed`` (pure: nothing is rendered or written).

    ``instruments`` (names of :data:`INSTRUMENTS`) restricts the instruments drawn, e.g. to
    the classes a prior knows; the axes are drawn as in the whole zoo, and a scene with
    more sources than the pool has instruments plays some of them twice.
    """
    unknown = sorted(set(instruments or ()) - set(INSTRUMENTS))
    if unknown:
        raise ValueError(f"draw_scene: unknown instrument {unknown[0]!r}; known: {', '.join(INSTRUMENTS)}")
    pool = tuple(instruments) if instruments else tuple(INSTRUMENTS)
    values = axis_values(index, seed)
    rng = np.random.default_rng([seed, index])
    dims = _room(rng, values["room_size"])
    low, high = (float(v) for v in values["rt60"].split("-"))
    rt60 = round(float(rng.uniform(low, high)), 3)
    stage_m = (dims[0] * rng.uniform(0.55, 0.7), dims[1] * rng.uniform(0.4, 0.6))
    raw_sources = _sources(rng, values, dims, stage_m, pool)
    raw_mics = _mics(rng, values, dims, stage_m, raw_sources)
    sigma = float(values["position_error_cm"]) / 100.0
    mics = []
    for name, role, p, aim in raw_mics:
        recorded, typed = _pattern(values, role)
        az, el = (aim[1], 0.0) if aim[0] == "angle" else aim_angles(p, aim[1])
        mics.append(ZooMic(name, role, tuple(float(v) for v in p), recorded, round(float(az), 2), round(float(el), 2),
                           _typo(rng, p, sigma, dims), typed))
    names = {m.name for m in mics}
    sources = tuple(ZooSource(name, kind, program, prompt, tuple(float(v) for v in p), _typo(rng, p, sigma, dims),
                              f"spot_{name}" if f"spot_{name}" in names else None)
                    for name, kind, program, prompt, p in raw_sources)
    return Scene(index=index, seed=seed, axes=values, dimensions_m=dims, rt60_s=rt60,
                 sample_rate=int(values["sample_rate"]), snr_db=float(values["snr_db"]),
                 soundfont=str(values["soundfont"]), mics=tuple(mics), sources=sources,
                 instruments=tuple(instruments) if instruments else None)
