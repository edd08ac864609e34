#version 330 core
// One instanced quad per 3D Gaussian: EWA projection to a 2D Gaussian, exactly as
// engine/render/projection.py (gsplat's pinhole projection) does it on the CPU.
//
// Screen convention: image pixel (x, y) (x right, y down, origin top-left, centres at
// +0.5) is drawn to framebuffer pixel (x, y) counted from GL's bottom-left origin, so the
// framebuffer holds the image upside down *as GL sees it* and reads back row 0 first
// with no flip; gl_FragCoord.xy is then the pixel centre in image coordinates.

// Per instance (divisor 1), back-to-front order, float32.
in vec3 in_mean;     // world position, metres
in vec4 in_quat;     // wxyz, any norm (normalised here)
in vec3 in_scale;    // activated scales, metres
in float in_opacity; // [0, 1]
in vec3 in_color;    // linear RGB (clamped to [0, 1] here)

uniform mat4 u_view;       // OpenCV world_to_cam
uniform mat3 u_K;          // pinhole intrinsics, pixels
uniform vec2 u_size;       // image width, height
uniform vec4 u_uv_limits;  // x/z in [x, y], y/z in [z, w]: the Jacobian clamp
uniform float u_eps2d;     // low-pass filter, pixel²
uniform float u_near;
uniform float u_far;
uniform float u_alpha_min;

flat out vec2 v_center;    // pixels
flat out vec3 v_conic;     // (a, b, c) of the inverse 2D covariance
flat out float v_opacity;
flat out vec3 v_color;
flat out float v_depth;    // camera z, metres

mat3 quat_to_rotmat(vec4 q) {
    q = q / max(length(q), 1e-12);
    float w = q.x, x = q.y, y = q.z, z = q.w;
    // GLSL matrices are built column by column.
    return mat3(
        1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y + w * z), 2.0 * (x * z - w * y),
        2.0 * (x * y - w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z + w * x),
        2.0 * (x * z + w * y), 2.0 * (y * z - w * x), 1.0 - 2.0 * (x * x + y * y));
}

void cull() {
    gl_Position = vec4(2.0, 2.0, 2.0, 1.0);  // outside the clip volume: the quad is dropped
    v_center = vec2(0.0);
    v_conic = vec3(0.0);
    v_opacity = 0.0;
    v_color = vec3(0.0);
    v_depth = 0.0;
}

void main() {
    vec3 pc = (u_view * vec4(in_mean, 1.0)).xyz;
    float z = pc.z;
    // The CPU already culled these; this keeps a bad instance (NaN, ...) from drawing.
    if (!(z > u_near && z < u_far && in_opacity >= u_alpha_min)) { cull(); return; }

    float fx = u_K[0][0], fy = u_K[1][1];
    vec2 mean2d = (u_K * pc).xy / z;  // includes any skew, as projection.py does

    // Covariance in camera space through M = W R S (cov_c = M M^T), then J M.
    mat3 M = mat3(u_view) * quat_to_rotmat(in_quat) * mat3(in_scale.x, 0.0, 0.0,
                                                             0.0, in_scale.y, 0.0,
                                                             0.0, 0.0, in_scale.z);
    float u = clamp(pc.x / z, u_uv_limits.x, u_uv_limits.y);
    float v = clamp(pc.y / z, u_uv_limits.z, u_uv_limits.w);
    mat3x2 J = mat3x2(fx / z, 0.0,
                      0.0, fy / z,
                      -fx * u / z, -fy * v / z);
    mat3x2 T = J * M;
    mat2 cov = T * transpose(T);
    float a = cov[0][0] + u_eps2d;
    float b = 0.5 * (cov[0][1] + cov[1][0]);
    float c = cov[1][1] + u_eps2d;
    float det = a * c - b * b;
    if (!(det > 0.0)) { cull(); return; }

    // The quad is the rectangle circumscribing the ellipse where o * exp(-r²/2) >= alpha_min,
    // r = Mahalanobis distance: outside it every fragment would be discarded anyway. Its
    // axes are the eigenvectors of the 2D covariance.
    float extent = sqrt(2.0 * log(in_opacity / u_alpha_min)) * 1.001 + 1e-3;
    float mid = 0.5 * (a + c);
    float d = sqrt(0.25 * (a - c) * (a - c) + b * b);
    float l1 = mid + d;
    float l2 = max(mid - d, 0.0);
    vec2 e1 = (a >= c) ? vec2(l1 - c, b) : vec2(b, l1 - a);
    float len1 = length(e1);
    e1 = len1 > 0.0 ? e1 / len1 : vec2(1.0, 0.0);
    vec2 e2 = vec2(-e1.y, e1.x);

    vec2 corner = vec2(float(gl_VertexID & 1), float(gl_VertexID >> 1)) * 2.0 - 1.0;  // triangle strip
    vec2 p = mean2d + extent * (corner.x * sqrt(l1) * e1 + corner.y * sqrt(l2) * e2);
    gl_Position = vec4(p / u_size * 2.0 - 1.0, 0.0, 1.0);

    v_center = mean2d;
    v_conic = vec3(c, -b, a) / det;
    v_opacity = in_opacity;
    v_color = clamp(in_color, 0.0, 1.0);
    v_depth = z;
}
