"""Writes example_workflows/<name>.json (ComfyUI UI format, what the template browser lists) and
workflows/api/<name>_api.json (API format, for POST /prompt and the tests) from one description
per graph, so the two twins can never drift apart. tools/make_thumbnails.py renders the .jpg
shown next to each template.

Run: python tools/make_workflows.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UI_DIR = ROOT / "example_workflows"  # ComfyUI serves this folder; keep only UI-format JSON in it
API_DIR = ROOT / "workflows" / "api"
sys.path.insert(0, str(ROOT))
from stvsr_core.registry import DEFAULT_MODEL  # noqa: E402  (the templates load the default model)

VIDEO = "bikes_short.mp4"  # the pack copies stvsr_core/assets/bikes_short.mp4 into ComfyUI/input

# node: (id, class, {widget: value}, {input: (from_id, slot, type)}, [(output name, type)], ui_only)
LOAD = [
    (1, "LoadVideo", {"file": VIDEO}, {}, [("VIDEO", "VIDEO")], False),
    (2, "GetVideoComponents", {}, {"video": (1, 0, "VIDEO")},
     [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")], False),
    (3, "ImageFromBatch", {"batch_index": 0, "length": 8}, {"image": (2, 0, "IMAGE")}, [("IMAGE", "IMAGE")], False),
    (4, "LoadSTVSRModel", {"model_name": DEFAULT_MODEL, "device": "auto", "precision": "auto"}, {},
     [("stvsr_model", "STVSR_MODEL")], False),
]


def upsample(prefix: str, multiplier: int) -> list:
    """Load Video -> STVSR Upsample (widgets in the node's order) -> Save Image and a video at the new rate."""
    widgets = {"scene_threshold": 0.15, "tile": 0, "exact_double": False, "frame_rate": 0.0,
               "multiplier": multiplier, "target_fps": 0.0, "upscale": True}
    return LOAD + [
        (5, "STVSRUpsample", widgets,
         {"stvsr_model": (4, 0, "STVSR_MODEL"), "images": (3, 0, "IMAGE"), "frame_rate": (2, 2, "FLOAT")},
         [("images", "IMAGE"), ("frame_rate", "FLOAT")], False),
        (6, "SaveImage", {"filename_prefix": f"stvsr/{prefix}"}, {"images": (5, 0, "IMAGE")}, [], False),
        (7, "CreateVideo", {"fps": 25.0 * multiplier}, {"images": (5, 0, "IMAGE"), "fps": (5, 1, "FLOAT")},
         [("VIDEO", "VIDEO")], True),
        (8, "SaveVideo", {"filename_prefix": "video/stvsr" + ("" if multiplier == 2 else f"_{prefix}"),
                          "format": "auto", "codec": "auto"},
         {"video": (7, 0, "VIDEO")}, [], True),
    ]


GRAPHS = {
    "stvsr_upsample": upsample("upsample", 2),
    "stvsr_triple_rate": upsample("triple_rate", 3),  # multiplier 3: 25 fps -> 75 fps
    "stvsr_dual_stream": LOAD + [
        (5, "STVSRDualStreamUpsample", {"tile": 0, "multiplier": 2},
         {"stvsr_model": (4, 0, "STVSR_MODEL"), "images": (3, 0, "IMAGE")},
         [("upscaled_frames", "IMAGE"), ("H_st", "IMAGE"), ("H_ts", "IMAGE"), ("cue", "MASK")], False),
        (6, "STVSRFuseStreams", {}, {"stvsr_model": (4, 0, "STVSR_MODEL"), "H_st": (5, 1, "IMAGE"),
                                     "H_ts": (5, 2, "IMAGE"), "cue": (5, 3, "MASK")},
         [("H_F", "IMAGE"), ("M_st", "MASK"), ("M_ts", "MASK")], False),
        (7, "STVSRRefine", {}, {"stvsr_model": (4, 0, "STVSR_MODEL"), "images": (6, 0, "IMAGE")},
         [("IMAGE", "IMAGE")], False),
        (8, "STVSRInterleave", {"scene_threshold": 0.15},
         {"frames": (5, 0, "IMAGE"), "in_between": (7, 0, "IMAGE"), "source": (3, 0, "IMAGE")},
         [("IMAGE", "IMAGE")], False),
        (9, "SaveImage", {"filename_prefix": "stvsr/dual_stream"}, {"images": (8, 0, "IMAGE")}, [], False),
        (10, "MaskToImage", {}, {"mask": (6, 1, "MASK")}, [("IMAGE", "IMAGE")], False),
        (11, "SaveImage", {"filename_prefix": "stvsr/mask_st"}, {"images": (10, 0, "IMAGE")}, [], False),
        (12, "MaskToImage", {}, {"mask": (6, 2, "MASK")}, [("IMAGE", "IMAGE")], False),
        (13, "SaveImage", {"filename_prefix": "stvsr/mask_ts"}, {"images": (12, 0, "IMAGE")}, [], False),
        (14, "PreviewImage", {}, {"images": (5, 1, "IMAGE")}, [], True),
        (15, "PreviewImage", {}, {"images": (5, 2, "IMAGE")}, [], True),
    ],
}


def api(nodes) -> dict:
    """Only the nodes the server must run; widget values and links as {input: value | [id, slot]}."""
    out = {}
    for nid, cls, widgets, inputs, _, ui_only in nodes:
        if ui_only:
            continue
        ins = {k: v for k, v in widgets.items() if k not in inputs}
        ins.update({k: [str(src), slot] for k, (src, slot, _) in inputs.items()})
        out[str(nid)] = {"class_type": cls, "inputs": ins, "_meta": {"title": cls}}
    return out


# nodes that show a picture or a video below their widgets get room for it
PREVIEW = {"LoadVideo": 240, "SaveImage": 260, "PreviewImage": 260, "SaveVideo": 240}
WIDTH, WIDE, GAP, ROW = 280, 320, 40, 24
VIEW = {"scale": 0.65, "offset": [20, 40]}  # opens readable (fit-to-view would hide the text of long graphs)


def layout(nodes) -> dict:
    """Left to right: a node's column is one past its deepest input (sources sit just left of
    their first consumer); nodes of a column stack top-down with room for their previews.
    Returns {id: (pos, size)}."""
    col = {}
    for nid, _, _, inputs, _, _ in nodes:  # the lists are in dependency order
        col[nid] = 1 + max((col[src] for src, _, _ in inputs.values()), default=-1)
    for nid, _, _, inputs, _, _ in nodes:
        consumers = [col[n] for n, _, _, ins, _, _ in nodes if any(s == nid for s, _, _ in ins.values())]
        if not inputs and consumers:
            col[nid] = min(consumers) - 1
    sizes = {}
    for nid, cls, widgets, inputs, outs, _ in nodes:
        sockets = max(len([k for k in inputs if k not in widgets]), len(outs))
        sizes[nid] = [WIDE if cls in PREVIEW else WIDTH, 40 + ROW * (sockets + len(widgets)) + PREVIEW.get(cls, 0)]
    x = [60]
    for c in range(max(col.values()) + 1):
        x.append(x[-1] + max(sizes[n][0] for n in col if col[n] == c) + GAP)
    out, y = {}, {}
    for nid, *_ in nodes:
        top = y.get(col[nid], 60)
        out[nid] = ([x[col[nid]], top], sizes[nid])
        y[col[nid]] = top + sizes[nid][1] + GAP
    return out


def ui(nodes) -> dict:
    """LiteGraph's saved-workflow format, as ComfyUI's frontend writes it."""
    links, ui_nodes = [], []
    outputs = {nid: [[] for _ in outs] for nid, _, _, _, outs, _ in nodes}
    for nid, cls, widgets, inputs, outs, _ in nodes:
        for name, (src, slot, typ) in inputs.items():
            link_id = len(links) + 1
            links.append([link_id, src, slot, nid, list(inputs).index(name), typ])
            outputs[src][slot].append(link_id)
    link_of = {(l[3], l[4]): l[0] for l in links}
    place = layout(nodes)
    for order, (nid, cls, widgets, inputs, outs, _) in enumerate(nodes):
        node = {"id": nid, "type": cls, "pos": place[nid][0], "size": place[nid][1],
                "flags": {}, "order": order, "mode": 0,
                "inputs": [{"name": k, "type": t, "link": link_of[(nid, i)],
                            **({"widget": {"name": k}} if k in widgets else {})}
                           for i, (k, (_, _, t)) in enumerate(inputs.items())],
                "outputs": [{"name": n, "type": t, "links": outputs[nid][i], "slot_index": i}
                            for i, (n, t) in enumerate(outs)],
                "properties": {"Node name for S&R": cls},
                "widgets_values": list(widgets.values()) + (["image"] if cls == "LoadVideo" else [])}
        ui_nodes.append(node)
    return {"last_node_id": max(n["id"] for n in ui_nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": VIEW}, "version": 0.4}


if __name__ == "__main__":
    UI_DIR.mkdir(exist_ok=True)
    API_DIR.mkdir(parents=True, exist_ok=True)
    for name, nodes in GRAPHS.items():
        (UI_DIR / f"{name}.json").write_text(json.dumps(ui(nodes), indent=1) + "\n")
        (API_DIR / f"{name}_api.json").write_text(json.dumps(api(nodes), indent=1) + "\n")
        print("wrote", name)
