// The SpatialAvatar-0 web player: poses the avatar's Gaussians on its head model (linear blend
// skinning as smplx does it, the paper's triangle binding as engine/binding.py does it), sorts
// them by depth every frame and draws them with the splat shaders of shaders/ (WebGL2).
// Everything it needs is in the page (engine/web/export.py writes it); nothing is fetched.
"use strict";
(function () {
  const H = JSON.parse(document.getElementById("header").textContent);
  const TYPES = { float32: Float32Array, float16: null, uint32: Uint32Array, uint16: Uint16Array, uint8: Uint8Array };

  function blob(name) {
    const el = document.getElementById("blob-" + name);
    if (!el) return null;
    const bin = atob(el.textContent);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const dtype = H.dtypes[name];
    if (dtype === "float16") return halfToFloat(new Uint16Array(bytes.buffer));
    return new TYPES[dtype](bytes.buffer);
  }

  function halfToFloat(h) {
    const out = new Float32Array(h.length);
    for (let i = 0; i < h.length; i++) {
      const x = h[i], s = x & 0x8000 ? -1 : 1, e = (x >> 10) & 0x1f, m = x & 0x3ff;
      out[i] = e === 0 ? s * m * 5.960464477539063e-8 : e === 31 ? (m ? NaN : s * Infinity)
        : s * (1 + m / 1024) * Math.pow(2, e - 15);
    }
    return out;
  }

  // ---------------------------------------------------------------- the model
  const E = H.n_expr, J = H.joints.length, parents = H.parents;
  const vShaped = blob("v_shaped"), V = vShaped.length / 3;
  const jRest = blob("j_rest"), jDirs = blob("j_dirs"), weights = blob("weights"), faces = blob("faces");
  const F = faces.length / 3;
  const exprCount = blob("expr_count"), exprIndex = blob("expr_index"), exprDelta = blob("expr_delta");
  const exprOffset = new Uint32Array(E + 1);
  for (let e = 0; e < E; e++) exprOffset[e + 1] = exprOffset[e] + exprCount[e];
  const posedirs = blob("posedirs");              // [P, V*3] or null
  const slotFace = blob("slot_face"), slotPos = blob("slot_pos"), slotQuat = blob("slot_quat");
  const slotLogScale = blob("slot_log_scale"), slotRGBA = blob("slot_rgba");
  const NS = slotFace.length;
  const outerMean = blob("outer_mean"), outerQuat = blob("outer_quat"), outerLogScale = blob("outer_log_scale");
  const outerRGBA = blob("outer_rgba"), outerJoint = blob("outer_joint");
  const NO = outerMean ? outerMean.length / 3 : 0;
  const N = NS + NO;
  const track = blob("track");                    // [T, E + 15] (expr, rotation, neck, jaw, eyes)
  const exprIdx = {};
  H.expr_names.forEach((n, i) => { if (n) exprIdx[n] = i; });

  // Per-Gaussian attributes that never change: scale factors, colour, opacity.
  const relScale = new Float32Array(NS * 3);
  for (let i = 0; i < NS * 3; i++) relScale[i] = Math.exp(slotLogScale[i]);
  const outerScale = new Float32Array(NO * 3);
  for (let i = 0; i < NO * 3; i++) outerScale[i] = Math.exp(outerLogScale[i]);

  // ---------------------------------------------------------------- rotations
  function rodrigues(r) {              // axis-angle [3] -> row-major 3x3, as smplx's batch_rodrigues
    const angle = Math.hypot(r[0] + 1e-8, r[1] + 1e-8, r[2] + 1e-8);
    const x = r[0] / angle, y = r[1] / angle, z = r[2] / angle;
    const s = Math.sin(angle), c = Math.cos(angle), t = 1 - c;
    return [c + t * x * x, t * x * y - s * z, t * x * z + s * y,
            t * x * y + s * z, c + t * y * y, t * y * z - s * x,
            t * x * z - s * y, t * y * z + s * x, c + t * z * z];
  }
  function matmul3(a, b) {
    const o = new Array(9);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++)
      o[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
    return o;
  }
  function quatOfMat(m) {              // row-major 3x3 -> wxyz with w >= 0 (Shepperd), as rotations.rotmat_to_quat
    const tr = m[0] + m[4] + m[8];
    const cands = [[1 + tr, m[7] - m[5], m[2] - m[6], m[3] - m[1]],
                   [m[7] - m[5], 1 + m[0] - m[4] - m[8], m[1] + m[3], m[2] + m[6]],
                   [m[2] - m[6], m[1] + m[3], 1 - m[0] + m[4] - m[8], m[5] + m[7]],
                   [m[3] - m[1], m[2] + m[6], m[5] + m[7], 1 - m[0] - m[4] + m[8]]];
    const diag = [1 + tr, 1 + m[0] - m[4] - m[8], 1 - m[0] + m[4] - m[8], 1 - m[0] - m[4] + m[8]];
    let best = 0;
    for (let k = 1; k < 4; k++) if (diag[k] > diag[best]) best = k;
    const q = cands[best], n = Math.hypot(q[0], q[1], q[2], q[3]), s = q[0] < 0 ? -1 / n : 1 / n;
    return [q[0] * s, q[1] * s, q[2] * s, q[3] * s];
  }
  function axisAngleYPR(yawDeg, pitchDeg, rollDeg) {   // expressions._axis_angle: Ry(yaw) Rx(pitch) Rz(roll)
    const d = Math.PI / 180;
    let R = rodrigues([0, yawDeg * d, 0]);
    R = matmul3(R, rodrigues([pitchDeg * d, 0, 0]));
    R = matmul3(R, rodrigues([0, 0, rollDeg * d]));
    const q = quatOfMat(R), v = Math.hypot(q[1], q[2], q[3]);
    const angle = 2 * Math.atan2(v, q[0]), k = angle / Math.max(v, 1e-12);
    return [q[1] * k, q[2] * k, q[3] * k];
  }

  // ---------------------------------------------------------------- parameters
  function neutral() {
    return { expr: new Float32Array(E), rotation: [0, 0, 0], neck: [0, 0, 0], jaw: [0, 0, 0],
             eyes: [0, 0, 0, 0, 0, 0], translation: [0, 0, 0] };
  }
  // expressions.posed: the named expressions set (joint motions added), then the pose's angles added.
  function posed(weights, pose) {
    const p = neutral(), ignored = [];
    for (const [name, w] of Object.entries(weights)) {
      const joint = H.joint_expressions[name];
      if (joint) p[joint[0]][joint[1]] += w * joint[2];
      else if (name in exprIdx) p.expr[exprIdx[name]] = w;
      else ignored.push(name);
    }
    const add = (a, b) => { for (let i = 0; i < 3; i++) a[i] += b[i]; };
    add(p.rotation, axisAngleYPR(...pose.head));
    add(p.neck, axisAngleYPR(...pose.neck));
    p.jaw[0] += pose.jaw[0] * Math.PI / 180; p.jaw[1] += pose.jaw[1] * Math.PI / 180;
    const eye = axisAngleYPR(pose.gaze[0], pose.gaze[1], 0);
    for (let i = 0; i < 3; i++) { p.eyes[i] += eye[i]; p.eyes[3 + i] += eye[i]; }
    return { params: p, ignored };
  }
  function trackFrame(t) {
    const w = E + 15, o = t * w, p = neutral();
    p.expr.set(track.subarray(o, o + E));
    p.rotation = Array.from(track.subarray(o + E, o + E + 3));
    p.neck = Array.from(track.subarray(o + E + 3, o + E + 6));
    p.jaw = Array.from(track.subarray(o + E + 6, o + E + 9));
    p.eyes = Array.from(track.subarray(o + E + 9, o + E + 15));
    return p;
  }

  // ---------------------------------------------------------------- posing (HeadModel.forward + binding)
  const verts = new Float32Array(V * 3);
  const means = new Float32Array(N * 3), quats = new Float32Array(N * 4), scales = new Float32Array(N * 3);
  const faceR = new Float32Array(F * 9), faceQ = new Float32Array(F * 4), faceC = new Float32Array(F * 3);
  const faceS = new Float32Array(F);

  function jointTransforms(p) {        // smplx batch_rigid_transform: [J] of {R (row-major), t}, rest joints removed
    const Jp = new Float64Array(J * 3);
    for (let j = 0; j < J * 3; j++) Jp[j] = jRest[j];
    for (let e = 0; e < E; e++) {
      const w = p.expr[e];
      if (w !== 0) for (let k = 0; k < J * 3; k++) Jp[k] += w * jDirs[e * J * 3 + k];
    }
    const pose = [p.rotation, p.neck, p.jaw, p.eyes.slice(0, 3), p.eyes.slice(3, 6)];
    const rots = pose.map(rodrigues), chain = [];
    for (let j = 0; j < J; j++) {
      const rel = [Jp[3 * j], Jp[3 * j + 1], Jp[3 * j + 2]];
      const par = parents[j];
      if (par >= 0) for (let i = 0; i < 3; i++) rel[i] -= Jp[3 * par + i];
      if (par < 0) chain.push({ R: rots[j], t: rel });
      else {
        const P = chain[par];
        chain.push({ R: matmul3(P.R, rots[j]),
                     t: [0, 1, 2].map(i => P.R[3 * i] * rel[0] + P.R[3 * i + 1] * rel[1] + P.R[3 * i + 2] * rel[2] + P.t[i]) });
      }
    }
    return { rots, A: chain.map((T, j) => {     // A = T with T.R @ J_j taken off the translation
      const jj = [Jp[3 * j], Jp[3 * j + 1], Jp[3 * j + 2]];
      return { R: T.R, t: [0, 1, 2].map(i => T.t[i] - (T.R[3 * i] * jj[0] + T.R[3 * i + 1] * jj[1] + T.R[3 * i + 2] * jj[2])
                                           + p.translation[i]) };
    }) };
  }

  function pose(p) {
    // blendshapes (identity is baked into v_shaped)
    verts.set(vShaped);
    for (let e = 0; e < E; e++) {
      const w = p.expr[e];
      if (w === 0) continue;
      for (let k = exprOffset[e]; k < exprOffset[e + 1]; k++) {
        const v = exprIndex[k];
        verts[3 * v] += w * exprDelta[3 * k]; verts[3 * v + 1] += w * exprDelta[3 * k + 1]; verts[3 * v + 2] += w * exprDelta[3 * k + 2];
      }
    }
    const { rots, A } = jointTransforms(p);
    if (posedirs) {                    // pose correctives: (R_j - I) of the joints after the root
      const feat = [];
      for (let j = 1; j < J; j++) for (let k = 0; k < 9; k++) feat.push(rots[j][k] - (k % 4 === 0 ? 1 : 0));
      for (let f = 0; f < feat.length; f++) {
        const w = feat[f];
        if (Math.abs(w) < 1e-9) continue;
        const row = f * V * 3;
        for (let k = 0; k < V * 3; k++) verts[k] += w * posedirs[row + k];
      }
    }
    // linear blend skinning; the translation is in A
    for (let v = 0; v < V; v++) {
      const x = verts[3 * v], y = verts[3 * v + 1], z = verts[3 * v + 2];
      let ox = 0, oy = 0, oz = 0;
      for (let j = 0; j < J; j++) {
        const w = weights[v * J + j];
        if (w === 0) continue;
        const R = A[j].R, t = A[j].t;
        ox += w * (R[0] * x + R[1] * y + R[2] * z + t[0]);
        oy += w * (R[3] * x + R[4] * y + R[5] * z + t[1]);
        oz += w * (R[6] * x + R[7] * y + R[8] * z + t[2]);
      }
      verts[3 * v] = ox; verts[3 * v + 1] = oy; verts[3 * v + 2] = oz;
    }
    // triangle frames: columns first edge, normal, edge x normal; centroid; mean edge length
    for (let f = 0; f < F; f++) {
      const a = 3 * faces[3 * f], b = 3 * faces[3 * f + 1], c = 3 * faces[3 * f + 2];
      const e1 = [verts[b] - verts[a], verts[b + 1] - verts[a + 1], verts[b + 2] - verts[a + 2]];
      const e2 = [verts[c] - verts[a], verts[c + 1] - verts[a + 1], verts[c + 2] - verts[a + 2]];
      const e3 = [verts[c] - verts[b], verts[c + 1] - verts[b + 1], verts[c + 2] - verts[b + 2]];
      const l1 = Math.hypot(...e1), l2 = Math.hypot(...e3), l3 = Math.hypot(...e2);
      const x0 = e1.map(u => u / Math.max(l1, 1e-12));
      let n = [e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2], e1[0] * e2[1] - e1[1] * e2[0]];
      const ln = Math.max(Math.hypot(...n), 1e-12);
      n = n.map(u => u / ln);
      const bx = [x0[1] * n[2] - x0[2] * n[1], x0[2] * n[0] - x0[0] * n[2], x0[0] * n[1] - x0[1] * n[0]];
      const R = [x0[0], n[0], bx[0], x0[1], n[1], bx[1], x0[2], n[2], bx[2]];
      faceR.set(R, 9 * f);
      faceQ.set(quatOfMat(R), 4 * f);
      faceC[3 * f] = (verts[a] + verts[b] + verts[c]) / 3;
      faceC[3 * f + 1] = (verts[a + 1] + verts[b + 1] + verts[c + 1]) / 3;
      faceC[3 * f + 2] = (verts[a + 2] + verts[b + 2] + verts[c + 2]) / 3;
      faceS[f] = (l1 + l2 + l3) / 3;
    }
    // the head page: x = R x_local s + c, q = q_f (x) q_local, scale = s_local s
    for (let i = 0; i < NS; i++) {
      const f = slotFace[i], s = faceS[f], R = 9 * f;
      const x = slotPos[3 * i], y = slotPos[3 * i + 1], z = slotPos[3 * i + 2];
      for (let k = 0; k < 3; k++)
        means[3 * i + k] = (faceR[R + 3 * k] * x + faceR[R + 3 * k + 1] * y + faceR[R + 3 * k + 2] * z) * s + faceC[3 * f + k];
      quatMul(faceQ, 4 * f, slotQuat, 4 * i, quats, 4 * i, true);
      scales[3 * i] = relScale[3 * i] * s; scales[3 * i + 1] = relScale[3 * i + 1] * s; scales[3 * i + 2] = relScale[3 * i + 2] * s;
    }
    // the outer layer: rigid with its joint
    const jq = A.map(T => quatOfMat(T.R));
    for (let i = 0; i < NO; i++) {
      const o = NS + i, T = A[outerJoint[i]];
      const x = outerMean[3 * i], y = outerMean[3 * i + 1], z = outerMean[3 * i + 2];
      for (let k = 0; k < 3; k++) means[3 * o + k] = T.R[3 * k] * x + T.R[3 * k + 1] * y + T.R[3 * k + 2] * z + T.t[k];
      quatMul(jq[outerJoint[i]], 0, outerQuat, 4 * i, quats, 4 * o, false);
      scales[3 * o] = outerScale[3 * i]; scales[3 * o + 1] = outerScale[3 * i + 1]; scales[3 * o + 2] = outerScale[3 * i + 2];
    }
  }
  function quatMul(a, ai, b, bi, out, oi, normalizeB) {   // a (x) b, wxyz
    let bw = b[bi], bx = b[bi + 1], by = b[bi + 2], bz = b[bi + 3];
    if (normalizeB) { const n = Math.hypot(bw, bx, by, bz) || 1; bw /= n; bx /= n; by /= n; bz /= n; }
    const aw = a[ai], ax = a[ai + 1], ay = a[ai + 2], az = a[ai + 3];
    out[oi] = aw * bw - ax * bx - ay * by - az * bz;
    out[oi + 1] = aw * bx + ax * bw + ay * bz - az * by;
    out[oi + 2] = aw * by - ax * bz + ay * bw + az * bx;
    out[oi + 3] = aw * bz + ax * by - ay * bx + az * bw;
  }

  // ---------------------------------------------------------------- camera (camera.orbit_camera, app orbit view)
  const view = { yaw: 0, pitch: 0, distance: H.camera.distance, fov: H.camera.fov_y, pan: [0, 0] };
  function camera(w, h) {
    const d = Math.PI / 180, y = view.yaw * d, p = view.pitch * d;
    const dir = [Math.cos(p) * Math.sin(y), Math.sin(p), Math.cos(p) * Math.cos(y)];
    const right = [Math.cos(y), 0, -Math.sin(y)];
    const up = [-Math.sin(p) * Math.sin(y), Math.cos(p), -Math.sin(p) * Math.cos(y)];
    const target = [0, 1, 2].map(i => H.camera.target[i] + view.pan[0] * right[i] + view.pan[1] * up[i]);
    const eye = [0, 1, 2].map(i => target[i] + view.distance * dir[i]);
    // Camera.look_at: rows right, down, forward (OpenCV)
    let fwd = [0, 1, 2].map(i => target[i] - eye[i]);
    const lf = Math.hypot(...fwd); fwd = fwd.map(u => u / lf);
    let r = [fwd[1] * 0 - fwd[2] * 1, fwd[2] * 0 - fwd[0] * 0, fwd[0] * 1 - fwd[1] * 0];   // fwd x (0, 1, 0)
    const lr = Math.hypot(...r); r = r.map(u => u / lr);
    const down = [fwd[1] * r[2] - fwd[2] * r[1], fwd[2] * r[0] - fwd[0] * r[2], fwd[0] * r[1] - fwd[1] * r[0]];
    const R = [r, down, fwd];
    const t = R.map(row => -(row[0] * eye[0] + row[1] * eye[1] + row[2] * eye[2]));
    const f = 0.5 * h / Math.tan(view.fov * d / 2);
    return { R, t, fx: f, fy: f, cx: w / 2, cy: h / 2, w, h };
  }

  // ---------------------------------------------------------------- WebGL2
  const canvas = document.getElementById("view");
  const gl = canvas.getContext("webgl2", { premultipliedAlpha: true, alpha: true, preserveDrawingBuffer: true, antialias: false });
  if (!gl) { document.getElementById("notes").textContent = "This page needs WebGL2."; return; }
  const floatTargets = !!gl.getExtension("EXT_color_buffer_float");
  function compile(type, src) {
    const s = gl.createShader(type);
    gl.shaderSource(s, src); gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  }
  function program(vs, fs) {
    const p = gl.createProgram();
    gl.attachShader(p, compile(gl.VERTEX_SHADER, vs)); gl.attachShader(p, compile(gl.FRAGMENT_SHADER, fs));
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p));
    return p;
  }
  const splat = program(H.shaders.vert, H.shaders.frag);
  const uniforms = {};                 // looked up once, not every frame
  const U = n => (n in uniforms ? uniforms[n] : (uniforms[n] = gl.getUniformLocation(splat, n)));
  const blit = program(`#version 300 es
    void main() { vec2 p = vec2(float(gl_VertexID & 1), float(gl_VertexID >> 1)) * 2.0 - 1.0; gl_Position = vec4(p, 0.0, 1.0); }`,
    `#version 300 es
    precision highp float;
    uniform sampler2D u_image; uniform vec3 u_background; uniform vec2 u_size;
    out vec4 color;
    void main() {  // the image's row 0 sits in the texture's bottom row: flip it onto the canvas
      vec4 c = texelFetch(u_image, ivec2(gl_FragCoord.x, u_size.y - 1.0 - gl_FragCoord.y), 0);
      color = vec4(c.rgb + u_background * (1.0 - c.a), 1.0);
    }`);
  const STRIDE = 14;
  const packed = new Float32Array(N * STRIDE);
  const buffer = gl.createBuffer();
  const vao = gl.createVertexArray();
  gl.bindVertexArray(vao);
  gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
  [["in_mean", 3, 0], ["in_quat", 4, 3], ["in_scale", 3, 7], ["in_opacity", 1, 10], ["in_color", 3, 11]].forEach(([name, n, off]) => {
    const loc = gl.getAttribLocation(splat, name);
    if (loc < 0) return;
    gl.enableVertexAttribArray(loc);
    gl.vertexAttribPointer(loc, n, gl.FLOAT, false, STRIDE * 4, off * 4);
    gl.vertexAttribDivisor(loc, 1);
  });
  gl.bindVertexArray(null);
  let target = null;
  function renderTarget(w, h) {
    if (target && target.w === w && target.h === h) return target;
    if (target) { gl.deleteTexture(target.tex); gl.deleteFramebuffer(target.fbo); }
    const tex = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, tex);
    gl.texStorage2D(gl.TEXTURE_2D, 1, floatTargets ? gl.RGBA32F : gl.RGBA8, w, h);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);   // float textures do not filter
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    const fbo = gl.createFramebuffer();
    gl.bindFramebuffer(gl.FRAMEBUFFER, fbo);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, tex, 0);
    target = { w, h, tex, fbo };
    return target;
  }

  // depth order: farthest first (the gl backend's order), by a two-pass 16-bit radix sort of z
  const keys = new Uint32Array(N), order = new Uint32Array(N), tmp = new Uint32Array(N), zf = new Float32Array(1);
  const zbits = new Uint32Array(zf.buffer), counts = new Uint32Array(65536);
  function sortBackToFront(cam) {
    const r = cam.R[2], tz = cam.t[2], near = H.render.near, far = H.render.far, amin = H.render.alpha_min;
    let m = 0;
    for (let i = 0; i < N; i++) {
      const z = r[0] * means[3 * i] + r[1] * means[3 * i + 1] + r[2] * means[3 * i + 2] + tz;
      const o = i < NS ? slotRGBA[4 * i + 3] / 255 : outerRGBA[4 * (i - NS) + 3] / 255;
      if (!(z > near && z < far && o >= amin)) continue;
      zf[0] = z;
      keys[i] = 0xffffffff - zbits[0];            // positive floats order as their bits; far first
      order[m++] = i;
    }
    for (const shift of [0, 16]) {
      counts.fill(0);
      for (let i = 0; i < m; i++) counts[(keys[order[i]] >>> shift) & 0xffff]++;
      for (let k = 0, s = 0; k < 65536; k++) { const c = counts[k]; counts[k] = s; s += c; }
      for (let i = 0; i < m; i++) tmp[counts[(keys[order[i]] >>> shift) & 0xffff]++] = order[i];
      order.set(tmp.subarray(0, m));
    }
    return m;
  }
  function pack(m) {
    for (let k = 0; k < m; k++) {
      const i = order[k], o = k * STRIDE;
      packed[o] = means[3 * i]; packed[o + 1] = means[3 * i + 1]; packed[o + 2] = means[3 * i + 2];
      packed[o + 3] = quats[4 * i]; packed[o + 4] = quats[4 * i + 1]; packed[o + 5] = quats[4 * i + 2]; packed[o + 6] = quats[4 * i + 3];
      packed[o + 7] = scales[3 * i]; packed[o + 8] = scales[3 * i + 1]; packed[o + 9] = scales[3 * i + 2];
      const rgba = i < NS ? slotRGBA : outerRGBA, j = 4 * (i < NS ? i : i - NS);
      packed[o + 10] = rgba[j + 3] / 255;
      packed[o + 11] = rgba[j] / 255; packed[o + 12] = rgba[j + 1] / 255; packed[o + 13] = rgba[j + 2] / 255;
    }
  }

  const state = { weights: {}, pose: { head: [0, 0, 0], neck: [0, 0, 0], jaw: [0, 0], gaze: [0, 0] },
                  background: [0.118, 0.122, 0.133], dirty: true, posedDirty: true,
                  track: track ? { frames: H.track.frames, fps: H.track.fps, source: "embedded" } : null,
                  arkit: null, playing: false, onTrack: false, loop: true, frame: 0, t0: 0, ignored: [], size: null };

  // What is shown: the track's frame once the track has been played or sought (an ARKit frame's
  // weights over the sliders', or an embedded frame's parameters), else the sliders.
  function currentParams() {
    if (state.track && state.onTrack && state.arkit) {
      const f = state.arkit.frames[state.frame] || {};
      return posed({ ...state.weights, ...f }, state.pose);
    }
    if (state.track && state.onTrack && state.track.source === "embedded") {
      return { params: trackFrame(state.frame), ignored: [] };
    }
    return posed(state.weights, state.pose);
  }

  let lastDraw = { w: 0, h: 0, m: 0 };
  const timings = { pose: 0, sort: 0, draw: 0 };    // ms of the last frame: posing, depth sort + packing, upload + draw calls
  function draw() {
    const dpr = state.size ? 1 : (window.devicePixelRatio || 1);
    const w = state.size ? state.size[0] : Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = state.size ? state.size[1] : Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const t0 = performance.now();
    timings.pose = 0;
    if (state.posedDirty) {
      const { params, ignored } = currentParams();
      pose(params);
      state.ignored = ignored;
      state.posedDirty = false;
      timings.pose = performance.now() - t0;
    }
    const t1 = performance.now();
    const cam = camera(w, h);
    const m = sortBackToFront(cam);
    pack(m);
    const t2 = performance.now();
    timings.sort = t2 - t1;
    gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
    gl.bufferData(gl.ARRAY_BUFFER, packed.subarray(0, m * STRIDE), gl.DYNAMIC_DRAW);
    const tgt = renderTarget(w, h);
    gl.bindFramebuffer(gl.FRAMEBUFFER, tgt.fbo);
    gl.viewport(0, 0, w, h);
    gl.clearColor(0, 0, 0, 0); gl.clear(gl.COLOR_BUFFER_BIT);
    gl.useProgram(splat);
    const R = cam.R, t = cam.t;
    // column-major: GLSL's u_view * vec4(x, 1) = world_to_cam x
    gl.uniformMatrix4fv(U("u_view"), false, [R[0][0], R[1][0], R[2][0], 0, R[0][1], R[1][1], R[2][1], 0,
                                              R[0][2], R[1][2], R[2][2], 0, t[0], t[1], t[2], 1]);
    gl.uniformMatrix3fv(U("u_K"), false, [cam.fx, 0, 0, 0, cam.fy, 0, cam.cx, cam.cy, 1]);
    gl.uniform2f(U("u_size"), w, h);
    const tanx = 0.5 * w / cam.fx, tany = 0.5 * h / cam.fy;
    gl.uniform4f(U("u_uv_limits"), -(cam.cx / cam.fx + 0.3 * tanx), (w - cam.cx) / cam.fx + 0.3 * tanx,
                 -(cam.cy / cam.fy + 0.3 * tany), (h - cam.cy) / cam.fy + 0.3 * tany);
    gl.uniform1f(U("u_eps2d"), H.render.eps2d);
    gl.uniform1f(U("u_near"), H.render.near);
    gl.uniform1f(U("u_far"), H.render.far);
    gl.uniform1f(U("u_alpha_min"), H.render.alpha_min);
    gl.uniform1f(U("u_alpha_max"), H.render.alpha_max);
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
    gl.bindVertexArray(vao);
    gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, m);
    gl.bindVertexArray(null);
    gl.disable(gl.BLEND);
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    gl.viewport(0, 0, w, h);
    gl.useProgram(blit);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_2D, tgt.tex);
    gl.uniform1i(gl.getUniformLocation(blit, "u_image"), 0);
    gl.uniform3f(gl.getUniformLocation(blit, "u_background"), ...state.background);
    gl.uniform2f(gl.getUniformLocation(blit, "u_size"), w, h);
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
    timings.draw = performance.now() - t2;       // the GPU may still be drawing: submission time
    lastDraw = { w, h, m };
  }

  // ---------------------------------------------------------------- the loop and the frame rate
  let frames = 0, since = performance.now(), fps = 0, drawn = 0;
  const fpsEl = document.getElementById("fps");
  function tick(now) {
    if (state.playing && state.track) {
      const f = Math.floor((now - state.t0) / 1000 * state.track.fps);
      let next = f;
      if (next >= state.track.frames) {
        if (state.loop) { next = next % state.track.frames; }
        else { next = state.track.frames - 1; state.playing = false; updatePlay(); }
      }
      if (next !== state.frame) { state.frame = next; state.posedDirty = state.dirty = true; updateScrub(); }
    }
    if (state.dirty || state.playing || state.spin) {
      state.dirty = false;
      draw();
      frames++; drawn++;
    }
    if (now - since > 500) {
      fps = frames * 1000 / (now - since);
      const busy = frames > 1 ? `${fps.toFixed(1)} FPS` : "idle";    // frames are drawn on change only
      frames = 0; since = now;
      fpsEl.textContent = `${busy} | last frame ${(timings.pose + timings.sort + timings.draw).toFixed(0)} ms | ` +
        `${lastDraw.m.toLocaleString()} splats | ${lastDraw.w}x${lastDraw.h}`;
    }
    requestAnimationFrame(tick);
  }

  // ---------------------------------------------------------------- ARKit tracks
  // ARKit's 52 names end in Left/Right; the head model's in _L/_R. Names it lacks are listed.
  function arkitName(n) { return n.replace(/Left$/, "_L").replace(/Right$/, "_R"); }
  function loadArkit(data) {
    let names = data.names, rows = data.frames || data.weights || data, fps = data.fps || 30;
    if (!Array.isArray(rows) || !rows.length) throw new Error("a track is a list of frames (or {fps, frames})");
    const frames = rows.map(r => {
      const out = {};
      if (Array.isArray(r)) names.forEach((n, i) => { out[arkitName(n)] = r[i]; });
      else for (const [n, w] of Object.entries(r)) out[arkitName(n)] = w;
      return out;
    });
    const known = new Set([...Object.keys(exprIdx), ...Object.keys(H.joint_expressions)]);
    const seen = new Set(); frames.forEach(f => Object.keys(f).forEach(n => seen.add(n)));
    const ignored = [...seen].filter(n => !known.has(n)).sort();
    frames.forEach(f => ignored.forEach(n => delete f[n]));
    state.arkit = { frames };
    state.track = { frames: frames.length, fps, source: "ARKit" };
    state.frame = 0; state.t0 = performance.now(); state.posedDirty = state.dirty = true;
    document.getElementById("scrub").max = frames.length - 1;
    document.getElementById("notes").textContent =
      `ARKit track: ${frames.length} frames at ${fps} FPS` + (ignored.length ? `\nignored (not in ${H.head_model}): ${ignored.join(", ")}` : "");
    return { frames: frames.length, ignored };
  }

  // ---------------------------------------------------------------- the panel
  function slider(parent, label, min, max, value, step, onInput) {
    const row = document.createElement("div"); row.className = "row";
    const l = document.createElement("label"); l.textContent = label; l.title = label;
    const input = document.createElement("input"); input.type = "range"; input.min = min; input.max = max; input.step = step; input.value = value;
    const out = document.createElement("output"); out.textContent = (+value).toFixed(2);
    input.addEventListener("input", () => { out.textContent = (+input.value).toFixed(2); onInput(+input.value); });
    row.append(l, input, out); parent.append(row);
    return { set(v) { input.value = v; out.textContent = (+v).toFixed(2); } };
  }
  const sliders = {}, poseSliders = {};
  function buildPanel() {
    const box = document.getElementById("expressions");
    const taken = new Set(), groups = [];
    for (const [label, prefixes] of H.groups) {
      const sel = H.pickable.filter(n => prefixes.some(p => n.startsWith(p)) && !taken.has(n));
      sel.forEach(n => taken.add(n)); groups.push([label, sel]);
    }
    const rest = H.pickable.filter(n => !taken.has(n));
    if (rest.length) groups.push(["Other", rest]);
    for (const [label, names] of groups) {
      if (!names.length) continue;
      const d = document.createElement("details"), s = document.createElement("summary");
      s.textContent = `${label} (${names.length})`; d.append(s); box.append(d);
      for (const n of names) sliders[n] = slider(d, n, 0, 1, 0, 0.01, v => api.set({ [n]: v }));
    }
    const poseBox = document.getElementById("pose");
    for (const [label, fld, i, rng] of H.pose_sliders)
      poseSliders[fld + i] = slider(poseBox, label, -rng, rng, 0, 0.5, v => { const p = state.pose[fld].slice(); p[i] = v; api.pose({ [fld]: p }); });
    const preset = document.getElementById("preset");
    for (const name of Object.keys(H.presets)) { const o = document.createElement("option"); o.value = o.textContent = name; preset.append(o); }
    preset.value = "neutral" in H.presets ? "neutral" : preset.value;
    preset.addEventListener("change", () => api.preset(preset.value));
    document.getElementById("reset-expr").onclick = () => { api.reset(); preset.value = "neutral"; };
    document.getElementById("reset-view").onclick = () => api.view({ yaw: 0, pitch: 0, distance: H.camera.distance, pan: [0, 0] });
    document.getElementById("front").onclick = () => api.view({ yaw: 0, pitch: 0 });
    document.getElementById("left").onclick = () => api.view({ yaw: 35, pitch: 0 });
    document.getElementById("right").onclick = () => api.view({ yaw: -35, pitch: 0 });
    document.getElementById("play").onclick = () => (state.playing ? api.pause() : api.play());
    document.getElementById("loop").onchange = e => { state.loop = e.target.checked; };
    document.getElementById("scrub").addEventListener("input", e => api.seek(+e.target.value));
    document.getElementById("track-file").addEventListener("change", async e => {
      const f = e.target.files[0]; if (f) loadTrackText(await f.text(), f.name);
    });
    updateScrub(); updatePlay();
  }
  function loadTrackText(text, name) {
    try { loadArkit(JSON.parse(text)); api.play(); }
    catch (err) { document.getElementById("notes").textContent = `${name}: not an ARKit track (${err.message})`; }
  }
  function updateScrub() {
    const s = document.getElementById("scrub");
    s.max = state.track ? state.track.frames - 1 : 0; s.value = state.frame;
    document.getElementById("frame-label").textContent = state.track ? `${state.frame + 1} / ${state.track.frames}` : "no track";
  }
  function updatePlay() { document.getElementById("play").textContent = state.playing ? "Pause" : "Play"; }

  // ---------------------------------------------------------------- mouse and touch (the app's orbit view)
  const stage = document.getElementById("stage");
  const DEG_PER_PIXEL = 0.4;
  let drag = null;
  stage.addEventListener("contextmenu", e => e.preventDefault());
  stage.addEventListener("pointerdown", e => { stage.setPointerCapture(e.pointerId); drag = { x: e.clientX, y: e.clientY, pan: e.button !== 0 || e.shiftKey }; });
  stage.addEventListener("pointerup", () => { drag = null; });
  stage.addEventListener("pointermove", e => {
    if (!drag || touches.size > 1) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    drag.x = e.clientX; drag.y = e.clientY;
    if (drag.pan) panBy(dx, dy); else api.view({ yaw: ((view.yaw - dx * DEG_PER_PIXEL + 180) % 360 + 360) % 360 - 180,
                                                 pitch: Math.max(-80, Math.min(80, view.pitch + dy * DEG_PER_PIXEL)) });
  });
  function panBy(dx, dy) {
    const metres = 2 * view.distance * Math.tan(view.fov * Math.PI / 360) / Math.max(stage.clientHeight, 1);
    api.view({ pan: [view.pan[0] - dx * metres, view.pan[1] + dy * metres] });
  }
  stage.addEventListener("wheel", e => { e.preventDefault(); api.view({ distance: Math.min(4, Math.max(0.25, view.distance * Math.pow(0.9, -e.deltaY / 100))) }); }, { passive: false });
  const touches = new Map();
  let pinch = null;
  stage.addEventListener("touchstart", e => { for (const t of e.changedTouches) touches.set(t.identifier, [t.clientX, t.clientY]); pinch = null; }, { passive: true });
  stage.addEventListener("touchend", e => { for (const t of e.changedTouches) touches.delete(t.identifier); pinch = null; }, { passive: true });
  stage.addEventListener("touchmove", e => {
    for (const t of e.changedTouches) touches.set(t.identifier, [t.clientX, t.clientY]);
    if (touches.size !== 2) return;
    const [a, b] = [...touches.values()];
    const d = Math.hypot(a[0] - b[0], a[1] - b[1]), c = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
    if (pinch) { api.view({ distance: Math.min(4, Math.max(0.25, view.distance * pinch.d / d)) }); panBy(c[0] - pinch.c[0], c[1] - pinch.c[1]); }
    pinch = { d, c };
  }, { passive: true });
  stage.addEventListener("dragover", e => { e.preventDefault(); document.getElementById("drop").style.display = "flex"; });
  stage.addEventListener("dragleave", () => { document.getElementById("drop").style.display = "none"; });
  stage.addEventListener("drop", async e => {
    e.preventDefault(); document.getElementById("drop").style.display = "none";
    const f = e.dataTransfer.files[0]; if (f) loadTrackText(await f.text(), f.name);
  });
  window.addEventListener("resize", () => { state.dirty = true; });

  // ---------------------------------------------------------------- the page's JS API
  const api = {
    /** Set named expressions, e.g. avatar.set({jawOpen: 0.6}); the others keep their weights. */
    set(weights) {
      for (const [n, w] of Object.entries(weights)) { state.weights[n] = +w; if (sliders[n]) sliders[n].set(+w); }
      state.posedDirty = state.dirty = true; return api;
    },
    /** Joint angles in degrees: {head: [yaw, pitch, roll], neck: [...], jaw: [open, sideways], gaze: [yaw, pitch]}. */
    pose(angles) {
      for (const [k, v] of Object.entries(angles)) {
        state.pose[k] = v.slice();
        v.forEach((x, i) => poseSliders[k + i] && poseSliders[k + i].set(x));
      }
      state.posedDirty = state.dirty = true; return api;
    },
    preset(name) {
      if (!(name in H.presets)) throw new Error(`no preset ${name}; known: ${Object.keys(H.presets).join(", ")}`);
      for (const n of Object.keys(state.weights)) if (sliders[n]) sliders[n].set(0);
      document.getElementById("preset").value = name;
      state.weights = {}; return api.set(H.presets[name]);
    },
    reset() {
      for (const s of Object.values(sliders)) s.set(0);
      for (const s of Object.values(poseSliders)) s.set(0);
      state.weights = {}; state.pose = { head: [0, 0, 0], neck: [0, 0, 0], jaw: [0, 0], gaze: [0, 0] };
      state.playing = state.onTrack = false; updatePlay();
      state.posedDirty = state.dirty = true; return api;
    },
    /** The orbit view: {yaw, pitch (degrees), distance (metres), pan: [right, up] metres}. */
    view(v) { Object.assign(view, v); state.dirty = true; return api; },
    /** A fixed render size in pixels (null: the canvas's own), and the background behind the avatar. */
    size(w, h) { state.size = w ? [w, h] : null; state.dirty = true; return api; },
    background(rgb) { state.background = rgb.slice(); state.dirty = true; return api; },
    /** Hide the panel and the readout: only the canvas. */
    bare(on = true) { document.body.classList.toggle("bare", on); state.dirty = true; return api; },
    loadTrack(data) { return loadArkit(typeof data === "string" ? JSON.parse(data) : data); },
    play() { if (!state.track) return api; state.playing = state.onTrack = true; state.posedDirty = state.dirty = true; state.t0 = performance.now() - state.frame / state.track.fps * 1000; updatePlay(); return api; },
    pause() { state.playing = false; updatePlay(); return api; },
    seek(frame) { state.onTrack = !!state.track; state.frame = Math.max(0, Math.min(frame | 0, (state.track ? state.track.frames : 1) - 1)); state.t0 = performance.now() - state.frame / (state.track ? state.track.fps : 1) * 1000; state.posedDirty = state.dirty = true; updateScrub(); return api; },
    /** Draw now (not waiting for the next animation frame). */
    render() { draw(); return api; },
    /** The last render as premultiplied RGBA float32, image row 0 first, base64 (little-endian):
        {width, height, base64}. */
    pixels() {
      const t = target, data = new Float32Array(t.w * t.h * 4);
      gl.bindFramebuffer(gl.FRAMEBUFFER, t.fbo);
      if (floatTargets) gl.readPixels(0, 0, t.w, t.h, gl.RGBA, gl.FLOAT, data);
      else { const b = new Uint8Array(t.w * t.h * 4); gl.readPixels(0, 0, t.w, t.h, gl.RGBA, gl.UNSIGNED_BYTE, b); b.forEach((x, i) => { data[i] = x / 255; }); }
      gl.bindFramebuffer(gl.FRAMEBUFFER, null);
      const bytes = new Uint8Array(data.buffer);
      let bin = "";
      for (let i = 0; i < bytes.length; i += 32768) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 32768));
      return { width: t.w, height: t.h, base64: btoa(bin) };
    },
    get frame() { return state.frame; },
    get frames() { return state.track ? state.track.frames : 0; },
    get playing() { return state.playing; },
    get fps() { return fps; },
    get timings() { return { ...timings }; },
    /** Keep drawing every animation frame (to measure the frame rate) or only on change. */
    spin(on = true) { state.spin = on; return api; },
    get drawn() { return drawn; },
    get ignored() { return state.ignored.slice(); },
    get info() { return { gaussians: N, head: NS, outer: NO, expressions: E, headModel: H.head_model, floatTargets }; },
  };
  window.avatar = api;
  buildPanel();
  if (state.track) document.getElementById("notes").textContent = `embedded track: ${state.track.frames} frames at ${state.track.fps} FPS`;
  requestAnimationFrame(tick);
})();
