#version 330 core
// Evaluates one projected Gaussian at a pixel centre, gsplat's rasterize_to_pixels rule:
// alpha = min(alpha_max, o exp(power)), nothing below alpha_min. Output is premultiplied
// and blended back to front with (ONE, ONE_MINUS_SRC_ALPHA) into float32 attachments, so
// attachment 0 accumulates (sum w c, 1 - T) and attachment 1 (sum w z, ., ., 1 - T).

flat in vec2 v_center;
flat in vec3 v_conic;
flat in float v_opacity;
flat in vec3 v_color;
flat in float v_depth;

uniform float u_alpha_min;
uniform float u_alpha_max;

layout(location = 0) out vec4 out_color;
layout(location = 1) out vec4 out_depth;

void main() {
    vec2 d = gl_FragCoord.xy - v_center;
    float power = -0.5 * (v_conic.x * d.x * d.x + v_conic.z * d.y * d.y) - v_conic.y * d.x * d.y;
    float alpha = min(u_alpha_max, v_opacity * exp(power));
    if (alpha < u_alpha_min) discard;
    out_color = vec4(v_color * alpha, alpha);
    out_depth = vec4(v_depth * alpha, 0.0, 0.0, alpha);
}
