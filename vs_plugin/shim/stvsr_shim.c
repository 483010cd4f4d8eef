/*
 * stvsr VapourSynth shim: registers core.stvsr.Upsample with its real argument list and
 * forwards each call to the Python implementation in vs_plugin.
 *
 * Python cannot register plugin functions, so this small plugin does it. It does not link
 * libpython: the few CPython calls it needs are looked up at run time with dlsym, so in a
 * host without Python the plugin still loads and Upsample reports a clear error.
 *
 * Flow of one call: take the GIL and call vs_plugin.bridge.run(**arguments) with the user's
 * arguments other than the clip. Clips pass between Python and a plugin only through plugin
 * calls, so while the user's call waits here run() calls core.stvsr.Upsample twice on this
 * thread: the first call returns the user's clip, the second passes in the clip Python built.
 * No second, internal plugin function is needed. If run() raises, the user gets
 * str(exception) as the error: the message, not a traceback.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "VapourSynth4.h"

/* Keep in step with vs_plugin.filter.upsample (a test compares the two). */
#define UPSAMPLE_ARGS "clip:vnode;model:data:opt;device_index:int:opt;device:data:opt;fp16:int:opt;" \
    "bf16:int:opt;num_streams:int:opt;tile:int:opt;tile_pad:int:opt;sc:int:opt;sc_threshold:float:opt;" \
    "exact_double:int:opt;matrix_in_s:data:opt;backend:data:opt;factor_num:int:opt;factor_den:int:opt;" \
    "fps_num:int:opt;fps_den:int:opt;upscale:int:opt;precision:data:opt;"

typedef void *PyObj;
#define DECREF(o) do { if (o) py->Py_DecRef(o); } while (0)

/* The CPython functions used here, looked up in the running process on every call. */
typedef struct {
    int (*Py_IsInitialized)(void);
    int (*PyGILState_Ensure)(void);
    void (*PyGILState_Release)(int);
    PyObj (*PyImport_ImportModule)(const char *);
    PyObj (*PyObject_GetAttrString)(PyObj, const char *);
    PyObj (*PyObject_Call)(PyObj, PyObj, PyObj);
    PyObj (*PyTuple_New)(intptr_t);
    PyObj (*PyDict_New)(void);
    int (*PyDict_SetItemString)(PyObj, const char *, PyObj);
    PyObj (*PyLong_FromLongLong)(long long);
    PyObj (*PyFloat_FromDouble)(double);
    PyObj (*PyBytes_FromStringAndSize)(const char *, intptr_t);
    void (*Py_DecRef)(PyObj);
    void (*PyErr_Fetch)(PyObj *, PyObj *, PyObj *);
    PyObj (*PyObject_Str)(PyObj);
    const char *(*PyUnicode_AsUTF8)(PyObj);
} PyApi;

static int loadPython(PyApi *py) {
#define LOAD(name) if (!(*(void **)&py->name = dlsym(RTLD_DEFAULT, #name))) return 0;
    LOAD(Py_IsInitialized) LOAD(PyGILState_Ensure) LOAD(PyGILState_Release) LOAD(PyImport_ImportModule)
    LOAD(PyObject_GetAttrString) LOAD(PyObject_Call) LOAD(PyTuple_New) LOAD(PyDict_New) LOAD(PyDict_SetItemString)
    LOAD(PyLong_FromLongLong) LOAD(PyFloat_FromDouble) LOAD(PyBytes_FromStringAndSize) LOAD(Py_DecRef)
    LOAD(PyErr_Fetch) LOAD(PyObject_Str) LOAD(PyUnicode_AsUTF8)
#undef LOAD
    return py->Py_IsInitialized();
}

/* The user's call this thread is serving while Python runs. */
typedef struct {
    VSNode *clip;
    int reentries;
    VSNode *result;
} Call;

static _Thread_local Call *current = NULL;

/* The user's arguments other than the clip, as Python keyword arguments (strings as bytes). */
static PyObj keywordArguments(const PyApi *py, const VSMap *in, const VSAPI *vsapi) {
    PyObj kwargs = py->PyDict_New();
    for (int i = 0; kwargs && i < vsapi->mapNumKeys(in); i++) {
        const char *key = vsapi->mapGetKey(in, i);
        PyObj value = NULL;
        switch (vsapi->mapGetType(in, key)) {
            case ptInt: value = py->PyLong_FromLongLong(vsapi->mapGetInt(in, key, 0, NULL)); break;
            case ptFloat: value = py->PyFloat_FromDouble(vsapi->mapGetFloat(in, key, 0, NULL)); break;
            case ptData: value = py->PyBytes_FromStringAndSize(vsapi->mapGetData(in, key, 0, NULL),
                                                           vsapi->mapGetDataSize(in, key, 0, NULL)); break;
            default: continue;  /* the clip */
        }
        if (!value || py->PyDict_SetItemString(kwargs, key, value) < 0) {
            DECREF(value);
            DECREF(kwargs);
            return NULL;
        }
        DECREF(value);
    }
    return kwargs;
}

/* Run vs_plugin.bridge.run(**arguments); on failure write the message to msg and return 0. */
static int runPython(const VSMap *in, const VSAPI *vsapi, char *msg, size_t size) {
    PyApi api;
    const PyApi *py = &api;
    if (!loadPython(&api)) {
        snprintf(msg, size, "stvsr.Upsample: this host has no Python interpreter; the filter is written in "
                 "Python. Run the script with vspipe, VapourSynth's Python module or a Python-based editor");
        return 0;
    }
    int gil = py->PyGILState_Ensure();
    PyObj module = py->PyImport_ImportModule("vs_plugin.bridge");
    PyObj run = module ? py->PyObject_GetAttrString(module, "run") : NULL;
    PyObj args = run ? py->PyTuple_New(0) : NULL;
    PyObj kwargs = args ? keywordArguments(py, in, vsapi) : NULL;
    PyObj result = kwargs ? py->PyObject_Call(run, args, kwargs) : NULL;
    int ok = result != NULL;
    if (!ok) {
        PyObj type = NULL, value = NULL, tb = NULL;
        py->PyErr_Fetch(&type, &value, &tb);
        PyObj text = value ? py->PyObject_Str(value) : NULL;
        const char *s = text ? py->PyUnicode_AsUTF8(text) : NULL;
        if (run)
            snprintf(msg, size, "%s", s ? s : "stvsr.Upsample: unknown error in vs_plugin.bridge.run()");
        else
            snprintf(msg, size, "stvsr.Upsample: could not load the Python implementation (vs_plugin.bridge): %s. "
                     "Install the stvsr package into the Python that VapourSynth uses (pip install stvsr[vapoursynth])",
                     s ? s : "unknown error");
        DECREF(text); DECREF(type); DECREF(value); DECREF(tb);
    }
    DECREF(result); DECREF(kwargs); DECREF(args); DECREF(run); DECREF(module);
    py->PyGILState_Release(gil);
    return ok;
}

static void VS_CC upsampleCreate(const VSMap *in, VSMap *out, void *userData, VSCore *core, const VSAPI *vsapi) {
    (void)userData; (void)core;
    if (current) {  /* bridge.run() calling back: first for the user's clip, then with its result */
        if (current->reentries++ == 0) {
            vsapi->mapSetNode(out, "clip", current->clip, maReplace);
        } else {
            if (current->result)
                vsapi->freeNode(current->result);
            current->result = vsapi->mapGetNode(in, "clip", 0, NULL);
            vsapi->mapSetNode(out, "clip", current->result, maReplace);
        }
        return;
    }
    Call call = {vsapi->mapGetNode(in, "clip", 0, NULL), 0, NULL};
    char msg[2048];
    current = &call;
    int ok = runPython(in, vsapi, msg, sizeof msg);
    current = NULL;
    vsapi->freeNode(call.clip);
    if (ok && call.result) {
        vsapi->mapConsumeNode(out, "clip", call.result, maReplace);
        return;
    }
    if (call.result)
        vsapi->freeNode(call.result);
    vsapi->mapSetError(out, ok ? "stvsr.Upsample: vs_plugin.bridge.run() handed back no clip" : msg);
}

VS_EXTERNAL_API(void) VapourSynthPluginInit2(VSPlugin *plugin, const VSPLUGINAPI *vspapi) {
    vspapi->configPlugin("io.github.stvsr", "stvsr", "Spatiotemporal video super-resolution (Dual-Stream Fusion)",
                         VS_MAKE_VERSION(1, 1), VAPOURSYNTH_API_VERSION, 0, plugin);
    vspapi->registerFunction("Upsample", UPSAMPLE_ARGS, "clip:vnode;", upsampleCreate, NULL, plugin);
}
