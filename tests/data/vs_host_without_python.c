/* A VapourSynth host with no Python: loads the stvsr shim by autoload and calls Upsample,
 * which must fail with a clear message instead of crashing. Prints the error, exits 0. */
#include <stdio.h>
#include "VapourSynth4.h"

int main(void) {
    const VSAPI *vsapi = getVapourSynthAPI(VAPOURSYNTH_API_VERSION);
    if (!vsapi) { fprintf(stderr, "no VapourSynth API\n"); return 2; }
    VSCore *core = vsapi->createCore(0);
    VSPlugin *stdp = vsapi->getPluginByNamespace("std", core);
    VSPlugin *stvsr = vsapi->getPluginByNamespace("stvsr", core);
    if (!stvsr) { fprintf(stderr, "stvsr plugin not loaded\n"); return 3; }
    VSMap *args = vsapi->createMap();
    vsapi->mapSetInt(args, "format", pfRGBS, maReplace);
    VSMap *blank = vsapi->invoke(stdp, "BlankClip", args);
    VSNode *clip = vsapi->mapGetNode(blank, "clip", 0, NULL);
    vsapi->clearMap(args);
    vsapi->mapConsumeNode(args, "clip", clip, maReplace);
    VSMap *res = vsapi->invoke(stvsr, "Upsample", args);
    const char *err = vsapi->mapGetError(res);
    printf("%s\n", err ? err : "NO ERROR");
    vsapi->freeMap(res);
    vsapi->freeMap(blank);
    vsapi->freeMap(args);
    vsapi->freeCore(core);
    return 0;
}
