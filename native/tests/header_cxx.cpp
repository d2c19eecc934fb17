// The public header must compile, alone, as C++ (mobile apps include it from C++).
#include "edgeguard/edgeguard.h"

int main() {
    float x[4] = {0.1f, 0.5f, 0.7f, 1.0f}, y[4];
    return eg_bit_depth_f32(x, y, 4, 1, EG_ISA_AUTO) == EG_OK ? 0 : 1;
}
