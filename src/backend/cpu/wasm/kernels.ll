; SIMD (wasm simd128) kernels for the CPU backend's cross-entropy rows and SwiGLU, compiled by build.ts
; with `llc-14 -O3 -march=wasm32 -mattr=+simd128 -filetype=obj`. Float64 lanes repeat the
; scalar code in layers.ts operation for operation (wasm has no fused multiply-add), so
; every stored fp32 value and the float64 row sum are bitwise those of the scalar loop.
target datalayout = "e-m:e-p:32:32-p10:8:8-p20:8:8-i64:64-n32:64-S128-ni:1:10:20"
target triple = "wasm32-unknown-unknown"

; p[i] = exp(p[i] - max) for i < n (n even); returns the float64 sum, added in index order.
; exp as in fast_math.ts: k = round(y log2 e) by the 1.5 * 2^52 trick, r by a Cody-Waite
; split of ln 2, degree-7 Taylor polynomial in Estrin's scheme, 2^k built from k's bits.
; Inputs below -708 (where 2^k would leave the normal range) give 0, NaN stays NaN.
; The constants come from the table %k (simd.ts EXP_TABLE, 12 pairs of doubles) loaded once
; before the loop: as immediates, V8 rebuilds every vector constant inside the loop.
define double @exp_shift_sum(float* %p, i32 %n, double %max, <2 x double>* %k) #0 {
entry:
  %mx0 = insertelement <2 x double> undef, double %max, i32 0
  %mx = shufflevector <2 x double> %mx0, <2 x double> undef, <2 x i32> zeroinitializer
  %k0 = getelementptr <2 x double>, <2 x double>* %k, i32 0
  %cLog2e = load volatile <2 x double>, <2 x double>* %k0, align 16
  %k1 = getelementptr <2 x double>, <2 x double>* %k, i32 1
  %cMagic = load volatile <2 x double>, <2 x double>* %k1, align 16
  %k2 = getelementptr <2 x double>, <2 x double>* %k, i32 2
  %cLn2Hi = load volatile <2 x double>, <2 x double>* %k2, align 16
  %k3 = getelementptr <2 x double>, <2 x double>* %k, i32 3
  %cLn2Lo = load volatile <2 x double>, <2 x double>* %k3, align 16
  %k4 = getelementptr <2 x double>, <2 x double>* %k, i32 4
  %cOne = load volatile <2 x double>, <2 x double>* %k4, align 16
  %k5 = getelementptr <2 x double>, <2 x double>* %k, i32 5
  %c3 = load volatile <2 x double>, <2 x double>* %k5, align 16
  %k6 = getelementptr <2 x double>, <2 x double>* %k, i32 6
  %cHalf = load volatile <2 x double>, <2 x double>* %k6, align 16
  %k7 = getelementptr <2 x double>, <2 x double>* %k, i32 7
  %c4 = load volatile <2 x double>, <2 x double>* %k7, align 16
  %k8 = getelementptr <2 x double>, <2 x double>* %k, i32 8
  %c5 = load volatile <2 x double>, <2 x double>* %k8, align 16
  %k9 = getelementptr <2 x double>, <2 x double>* %k, i32 9
  %c6 = load volatile <2 x double>, <2 x double>* %k9, align 16
  %k10 = getelementptr <2 x double>, <2 x double>* %k, i32 10
  %c7 = load volatile <2 x double>, <2 x double>* %k10, align 16
  %k11 = getelementptr <2 x double>, <2 x double>* %k, i32 11
  %cLimit = load volatile <2 x double>, <2 x double>* %k11, align 16
  ; 2^k = bits of (t << 52) + bits of 1.0, as ((bits of t) + 1023) << 52 modulo 2^64
  %oneBits = bitcast <2 x double> %cOne to <2 x i64>
  %c = icmp sgt i32 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i32 [0, %entry], [%i1, %loop]
  %sum = phi double [0.0, %entry], [%sum2, %loop]
  %q = getelementptr float, float* %p, i32 %i
  %vq = bitcast float* %q to <2 x float>*
  %x = load <2 x float>, <2 x float>* %vq, align 4
  %xd = fpext <2 x float> %x to <2 x double>
  %y = fsub <2 x double> %xd, %mx
  %t0 = fmul <2 x double> %y, %cLog2e
  %t = fadd <2 x double> %t0, %cMagic
  %kf = fsub <2 x double> %t, %cMagic
  %a0 = fmul <2 x double> %kf, %cLn2Hi
  %a1 = fsub <2 x double> %y, %a0
  %a2 = fmul <2 x double> %kf, %cLn2Lo
  %r = fsub <2 x double> %a1, %a2
  %r2 = fmul <2 x double> %r, %r
  ; ((1 + r) + r2 * (0.5 + r * c3))
  %p0 = fadd <2 x double> %cOne, %r
  %p1 = fmul <2 x double> %r, %c3
  %p2 = fadd <2 x double> %cHalf, %p1
  %p3 = fmul <2 x double> %r2, %p2
  %lo = fadd <2 x double> %p0, %p3
  ; ((c4 + r * c5) + r2 * (c6 + r * c7))
  %q1 = fmul <2 x double> %r, %c5
  %q2 = fadd <2 x double> %c4, %q1
  %q3 = fmul <2 x double> %r, %c7
  %q4 = fadd <2 x double> %c6, %q3
  %q5 = fmul <2 x double> %r2, %q4
  %hi = fadd <2 x double> %q2, %q5
  %r4 = fmul <2 x double> %r2, %r2
  %h4 = fmul <2 x double> %r4, %hi
  %poly = fadd <2 x double> %lo, %h4
  %bits = bitcast <2 x double> %t to <2 x i64>
  %sh = shl <2 x i64> %bits, <i64 52, i64 52>
  %kb = add <2 x i64> %sh, %oneBits
  %pow = bitcast <2 x i64> %kb to <2 x double>
  %e0 = fmul <2 x double> %poly, %pow
  %under = fcmp olt <2 x double> %y, %cLimit
  %e = select <2 x i1> %under, <2 x double> zeroinitializer, <2 x double> %e0
  %ef = fptrunc <2 x double> %e to <2 x float>
  store <2 x float> %ef, <2 x float>* %vq, align 4
  %l0 = extractelement <2 x double> %e, i32 0
  %l1 = extractelement <2 x double> %e, i32 1
  %sum1 = fadd double %sum, %l0
  %sum2 = fadd double %sum1, %l1
  %i1 = add i32 %i, 2
  %more = icmp slt i32 %i1, %n
  br i1 %more, label %loop, label %done
done:
  %res = phi double [0.0, %entry], [%sum2, %loop]
  ret double %res
}

; p[i] = fp32(p[i] * s) for i < n (n even), s in float64 as in layers.ts.
define void @scale_rows(float* %p, i32 %n, double %s) #0 {
entry:
  %s0 = insertelement <2 x double> undef, double %s, i32 0
  %sv = shufflevector <2 x double> %s0, <2 x double> undef, <2 x i32> zeroinitializer
  %c = icmp sgt i32 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i32 [0, %entry], [%i1, %loop]
  %q = getelementptr float, float* %p, i32 %i
  %vq = bitcast float* %q to <2 x float>*
  %x = load <2 x float>, <2 x float>* %vq, align 4
  %xd = fpext <2 x float> %x to <2 x double>
  %m = fmul <2 x double> %xd, %sv
  %mf = fptrunc <2 x double> %m to <2 x float>
  store <2 x float> %mf, <2 x float>* %vq, align 4
  %i1 = add i32 %i, 2
  %more = icmp slt i32 %i1, %n
  br i1 %more, label %loop, label %done
done:
  ret void
}
attributes #0 = { "target-features"="+simd128" nounwind }

; 1 + exp(-g) as layers.ts onePlusExpNeg: exp as above; -g above 709.7 gives Infinity and
; below -708 gives 0 (1 + the scalar's subnormal rounds to 1 as well), NaN stays NaN.
; The constants are the callers' %k table (simd.ts SWIGLU_TABLE), loaded once before their
; loops and passed in, so no vector immediate is rebuilt per element.
define internal <2 x double> @one_plus_exp_neg(<2 x double> %g, <2 x double> %cLog2e, <2 x double> %cMagic, <2 x double> %cLn2Hi, <2 x double> %cLn2Lo, <2 x double> %cOne, <2 x double> %c3, <2 x double> %cHalf, <2 x double> %c4, <2 x double> %c5, <2 x double> %c6, <2 x double> %c7, <2 x double> %cUnder, <2 x double> %cOver, <2 x double> %cInf) #1 {
  %y = fneg <2 x double> %g
  %t0 = fmul <2 x double> %y, %cLog2e
  %t = fadd <2 x double> %t0, %cMagic
  %kf = fsub <2 x double> %t, %cMagic
  %a0 = fmul <2 x double> %kf, %cLn2Hi
  %a1 = fsub <2 x double> %y, %a0
  %a2 = fmul <2 x double> %kf, %cLn2Lo
  %r = fsub <2 x double> %a1, %a2
  %r2 = fmul <2 x double> %r, %r
  %p0 = fadd <2 x double> %cOne, %r
  %p1 = fmul <2 x double> %r, %c3
  %p2 = fadd <2 x double> %cHalf, %p1
  %p3 = fmul <2 x double> %r2, %p2
  %lo = fadd <2 x double> %p0, %p3
  %q1 = fmul <2 x double> %r, %c5
  %q2 = fadd <2 x double> %c4, %q1
  %q3 = fmul <2 x double> %r, %c7
  %q4 = fadd <2 x double> %c6, %q3
  %q5 = fmul <2 x double> %r2, %q4
  %hi = fadd <2 x double> %q2, %q5
  %r4 = fmul <2 x double> %r2, %r2
  %h4 = fmul <2 x double> %r4, %hi
  %poly = fadd <2 x double> %lo, %h4
  ; 2^k = bits of (t << 52) + bits of 1.0, as ((bits of t) + 1023) << 52 modulo 2^64
  %bits = bitcast <2 x double> %t to <2 x i64>
  %sh = shl <2 x i64> %bits, <i64 52, i64 52>
  %oneBits = bitcast <2 x double> %cOne to <2 x i64>
  %kb = add <2 x i64> %sh, %oneBits
  %pow = bitcast <2 x i64> %kb to <2 x double>
  %e0 = fmul <2 x double> %poly, %pow
  %under = fcmp olt <2 x double> %y, %cUnder
  %e1 = select <2 x i1> %under, <2 x double> zeroinitializer, <2 x double> %e0
  %over = fcmp ogt <2 x double> %y, %cOver
  %e = select <2 x i1> %over, <2 x double> %cInf, <2 x double> %e1
  %res = fadd <2 x double> %cOne, %e
  ret <2 x double> %res
}

; out[i] = fp32((g / (1 + exp(-g))) * up[i]) for i < n (n even), g = gate[i].
define void @swiglu_forward(float* %out, float* %gate, float* %up, i32 %n, <2 x double>* %k) #0 {
entry:
  %k0 = getelementptr <2 x double>, <2 x double>* %k, i32 0
  %cLog2e = load volatile <2 x double>, <2 x double>* %k0, align 16
  %k1 = getelementptr <2 x double>, <2 x double>* %k, i32 1
  %cMagic = load volatile <2 x double>, <2 x double>* %k1, align 16
  %k2 = getelementptr <2 x double>, <2 x double>* %k, i32 2
  %cLn2Hi = load volatile <2 x double>, <2 x double>* %k2, align 16
  %k3 = getelementptr <2 x double>, <2 x double>* %k, i32 3
  %cLn2Lo = load volatile <2 x double>, <2 x double>* %k3, align 16
  %k4 = getelementptr <2 x double>, <2 x double>* %k, i32 4
  %cOne = load volatile <2 x double>, <2 x double>* %k4, align 16
  %k5 = getelementptr <2 x double>, <2 x double>* %k, i32 5
  %c3 = load volatile <2 x double>, <2 x double>* %k5, align 16
  %k6 = getelementptr <2 x double>, <2 x double>* %k, i32 6
  %cHalf = load volatile <2 x double>, <2 x double>* %k6, align 16
  %k7 = getelementptr <2 x double>, <2 x double>* %k, i32 7
  %c4 = load volatile <2 x double>, <2 x double>* %k7, align 16
  %k8 = getelementptr <2 x double>, <2 x double>* %k, i32 8
  %c5 = load volatile <2 x double>, <2 x double>* %k8, align 16
  %k9 = getelementptr <2 x double>, <2 x double>* %k, i32 9
  %c6 = load volatile <2 x double>, <2 x double>* %k9, align 16
  %k10 = getelementptr <2 x double>, <2 x double>* %k, i32 10
  %c7 = load volatile <2 x double>, <2 x double>* %k10, align 16
  %k11 = getelementptr <2 x double>, <2 x double>* %k, i32 11
  %cUnder = load volatile <2 x double>, <2 x double>* %k11, align 16
  %k12 = getelementptr <2 x double>, <2 x double>* %k, i32 12
  %cOver = load volatile <2 x double>, <2 x double>* %k12, align 16
  %k13 = getelementptr <2 x double>, <2 x double>* %k, i32 13
  %cInf = load volatile <2 x double>, <2 x double>* %k13, align 16
  %c = icmp sgt i32 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i32 [0, %entry], [%i1, %loop]
  %pg = getelementptr float, float* %gate, i32 %i
  %pu = getelementptr float, float* %up, i32 %i
  %po = getelementptr float, float* %out, i32 %i
  %vg = bitcast float* %pg to <2 x float>*
  %vu = bitcast float* %pu to <2 x float>*
  %vo = bitcast float* %po to <2 x float>*
  %gf = load <2 x float>, <2 x float>* %vg, align 4
  %uf = load <2 x float>, <2 x float>* %vu, align 4
  %g = fpext <2 x float> %gf to <2 x double>
  %u = fpext <2 x float> %uf to <2 x double>
  %den = call <2 x double> @one_plus_exp_neg(<2 x double> %g, <2 x double> %cLog2e, <2 x double> %cMagic, <2 x double> %cLn2Hi, <2 x double> %cLn2Lo, <2 x double> %cOne, <2 x double> %c3, <2 x double> %cHalf, <2 x double> %c4, <2 x double> %c5, <2 x double> %c6, <2 x double> %c7, <2 x double> %cUnder, <2 x double> %cOver, <2 x double> %cInf)
  %s = fdiv <2 x double> %g, %den
  %o = fmul <2 x double> %s, %u
  %of = fptrunc <2 x double> %o to <2 x float>
  store <2 x float> %of, <2 x float>* %vo, align 4
  %i1 = add i32 %i, 2
  %more = icmp slt i32 %i1, %n
  br i1 %more, label %loop, label %done
done:
  ret void
}

; sig = 1 / (1 + exp(-g)); dgate = fp32(d * u * sig * (1 + g * (1 - sig))),
; dup = fp32(d * g * sig) for i < n (n even), left to right as in layers.ts.
define void @swiglu_backward(float* %dgate, float* %dup, float* %dout, float* %gate, float* %up, i32 %n, <2 x double>* %k) #0 {
entry:
  %k0 = getelementptr <2 x double>, <2 x double>* %k, i32 0
  %cLog2e = load volatile <2 x double>, <2 x double>* %k0, align 16
  %k1 = getelementptr <2 x double>, <2 x double>* %k, i32 1
  %cMagic = load volatile <2 x double>, <2 x double>* %k1, align 16
  %k2 = getelementptr <2 x double>, <2 x double>* %k, i32 2
  %cLn2Hi = load volatile <2 x double>, <2 x double>* %k2, align 16
  %k3 = getelementptr <2 x double>, <2 x double>* %k, i32 3
  %cLn2Lo = load volatile <2 x double>, <2 x double>* %k3, align 16
  %k4 = getelementptr <2 x double>, <2 x double>* %k, i32 4
  %cOne = load volatile <2 x double>, <2 x double>* %k4, align 16
  %k5 = getelementptr <2 x double>, <2 x double>* %k, i32 5
  %c3 = load volatile <2 x double>, <2 x double>* %k5, align 16
  %k6 = getelementptr <2 x double>, <2 x double>* %k, i32 6
  %cHalf = load volatile <2 x double>, <2 x double>* %k6, align 16
  %k7 = getelementptr <2 x double>, <2 x double>* %k, i32 7
  %c4 = load volatile <2 x double>, <2 x double>* %k7, align 16
  %k8 = getelementptr <2 x double>, <2 x double>* %k, i32 8
  %c5 = load volatile <2 x double>, <2 x double>* %k8, align 16
  %k9 = getelementptr <2 x double>, <2 x double>* %k, i32 9
  %c6 = load volatile <2 x double>, <2 x double>* %k9, align 16
  %k10 = getelementptr <2 x double>, <2 x double>* %k, i32 10
  %c7 = load volatile <2 x double>, <2 x double>* %k10, align 16
  %k11 = getelementptr <2 x double>, <2 x double>* %k, i32 11
  %cUnder = load volatile <2 x double>, <2 x double>* %k11, align 16
  %k12 = getelementptr <2 x double>, <2 x double>* %k, i32 12
  %cOver = load volatile <2 x double>, <2 x double>* %k12, align 16
  %k13 = getelementptr <2 x double>, <2 x double>* %k, i32 13
  %cInf = load volatile <2 x double>, <2 x double>* %k13, align 16
  %c = icmp sgt i32 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i32 [0, %entry], [%i1, %loop]
  %pg = getelementptr float, float* %gate, i32 %i
  %pu = getelementptr float, float* %up, i32 %i
  %pd = getelementptr float, float* %dout, i32 %i
  %pdg = getelementptr float, float* %dgate, i32 %i
  %pdu = getelementptr float, float* %dup, i32 %i
  %vg = bitcast float* %pg to <2 x float>*
  %vu = bitcast float* %pu to <2 x float>*
  %vd = bitcast float* %pd to <2 x float>*
  %vdg = bitcast float* %pdg to <2 x float>*
  %vdu = bitcast float* %pdu to <2 x float>*
  %gf = load <2 x float>, <2 x float>* %vg, align 4
  %uf = load <2 x float>, <2 x float>* %vu, align 4
  %df = load <2 x float>, <2 x float>* %vd, align 4
  %g = fpext <2 x float> %gf to <2 x double>
  %u = fpext <2 x float> %uf to <2 x double>
  %d = fpext <2 x float> %df to <2 x double>
  %den = call <2 x double> @one_plus_exp_neg(<2 x double> %g, <2 x double> %cLog2e, <2 x double> %cMagic, <2 x double> %cLn2Hi, <2 x double> %cLn2Lo, <2 x double> %cOne, <2 x double> %c3, <2 x double> %cHalf, <2 x double> %c4, <2 x double> %c5, <2 x double> %c6, <2 x double> %c7, <2 x double> %cUnder, <2 x double> %cOver, <2 x double> %cInf)
  %sig = fdiv <2 x double> %cOne, %den
  %du0 = fmul <2 x double> %d, %u
  %du1 = fmul <2 x double> %du0, %sig
  %om = fsub <2 x double> %cOne, %sig
  %gom = fmul <2 x double> %g, %om
  %f = fadd <2 x double> %cOne, %gom
  %dgv = fmul <2 x double> %du1, %f
  %dg0 = fmul <2 x double> %d, %g
  %dupv = fmul <2 x double> %dg0, %sig
  %dgf = fptrunc <2 x double> %dgv to <2 x float>
  %duf = fptrunc <2 x double> %dupv to <2 x float>
  store <2 x float> %dgf, <2 x float>* %vdg, align 4
  store <2 x float> %duf, <2 x float>* %vdu, align 4
  %i1 = add i32 %i, 2
  %more = icmp slt i32 %i1, %n
  br i1 %more, label %loop, label %done
done:
  ret void
}
attributes #1 = { alwaysinline "target-features"="+simd128" nounwind }

; out[0], out[1] = the maxima of p's even and odd elements for i < n (n even), each a
; running `if (x > m) m = x` from -Infinity as in layers.ts (NaN never replaces m).
define void @row_max2(float* %p, i32 %n, double* %out) #0 {
entry:
  %c = icmp sgt i32 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i32 [0, %entry], [%i1, %loop]
  %m = phi <2 x double> [<double 0xFFF0000000000000, double 0xFFF0000000000000>, %entry], [%m1, %loop]
  %q = getelementptr float, float* %p, i32 %i
  %vq = bitcast float* %q to <2 x float>*
  %x = load <2 x float>, <2 x float>* %vq, align 4
  %xd = fpext <2 x float> %x to <2 x double>
  %gt = fcmp ogt <2 x double> %xd, %m
  %m1 = select <2 x i1> %gt, <2 x double> %xd, <2 x double> %m
  %i1 = add i32 %i, 2
  %more = icmp slt i32 %i1, %n
  br i1 %more, label %loop, label %done
done:
  %res = phi <2 x double> [<double 0xFFF0000000000000, double 0xFFF0000000000000>, %entry], [%m1, %loop]
  %vo = bitcast double* %out to <2 x double>*
  store <2 x double> %res, <2 x double>* %vo, align 8
  ret void
}

; Attention softmax row (attention.ts attentionForward): p[i] = fp32(exp(fp64(p[i]) * scale -
; max)) for i < n (n even), returning the float64 sum of the exps (before rounding) added in
; index order. exp as the TypeScript loop there: k = round(y log2 e) by the 1.5 * 2^52 trick,
; Cody-Waite r, the degree-7 Taylor polynomial in Horner's scheme, times 2^k (POW2[k + 1075]);
; y below -745.2 gives 0 and NaN stays NaN. 2^k is applied as two exact powers of two,
; 2^floor(k/2) then 2^(k - floor(k/2)): the first product is exact (normal), the second rounds
; once, so subnormal results round exactly as the single product by a subnormal 2^k does
; (k = -1075, where POW2 holds 0, gives 0). Constants: the table %k (simd.ts ATTN_TABLE).
define double @attn_exp_row(float* %p, i32 %n, double %scale, double %max, <2 x double>* %k) #0 {
entry:
  %sc0 = insertelement <2 x double> undef, double %scale, i32 0
  %sc = shufflevector <2 x double> %sc0, <2 x double> undef, <2 x i32> zeroinitializer
  %mx0 = insertelement <2 x double> undef, double %max, i32 0
  %mx = shufflevector <2 x double> %mx0, <2 x double> undef, <2 x i32> zeroinitializer
  %k0 = getelementptr <2 x double>, <2 x double>* %k, i32 0
  %cLog2e = load volatile <2 x double>, <2 x double>* %k0, align 16
  %k1 = getelementptr <2 x double>, <2 x double>* %k, i32 1
  %cMagic = load volatile <2 x double>, <2 x double>* %k1, align 16
  %k2 = getelementptr <2 x double>, <2 x double>* %k, i32 2
  %cLn2Hi = load volatile <2 x double>, <2 x double>* %k2, align 16
  %k3 = getelementptr <2 x double>, <2 x double>* %k, i32 3
  %cLn2Lo = load volatile <2 x double>, <2 x double>* %k3, align 16
  %k4 = getelementptr <2 x double>, <2 x double>* %k, i32 4
  %cOne = load volatile <2 x double>, <2 x double>* %k4, align 16
  %k5 = getelementptr <2 x double>, <2 x double>* %k, i32 5
  %c3 = load volatile <2 x double>, <2 x double>* %k5, align 16
  %k6 = getelementptr <2 x double>, <2 x double>* %k, i32 6
  %cHalf = load volatile <2 x double>, <2 x double>* %k6, align 16
  %k7 = getelementptr <2 x double>, <2 x double>* %k, i32 7
  %c4 = load volatile <2 x double>, <2 x double>* %k7, align 16
  %k8 = getelementptr <2 x double>, <2 x double>* %k, i32 8
  %c5 = load volatile <2 x double>, <2 x double>* %k8, align 16
  %k9 = getelementptr <2 x double>, <2 x double>* %k, i32 9
  %c6 = load volatile <2 x double>, <2 x double>* %k9, align 16
  %k10 = getelementptr <2 x double>, <2 x double>* %k, i32 10
  %c7 = load volatile <2 x double>, <2 x double>* %k10, align 16
  %k11 = getelementptr <2 x double>, <2 x double>* %k, i32 11
  %cLimit = load volatile <2 x double>, <2 x double>* %k11, align 16
  %k12 = getelementptr <2 x double>, <2 x double>* %k, i32 12
  %cBias = load volatile <2 x double>, <2 x double>* %k12, align 16
  %k13 = getelementptr <2 x double>, <2 x double>* %k, i32 13
  %cKmin = load volatile <2 x double>, <2 x double>* %k13, align 16
  %magicBits = bitcast <2 x double> %cMagic to <2 x i64>
  %bias = bitcast <2 x double> %cBias to <2 x i64>
  %kmin = bitcast <2 x double> %cKmin to <2 x i64>
  %c = icmp sgt i32 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i32 [0, %entry], [%i1, %loop]
  %sum = phi double [0.0, %entry], [%sum2, %loop]
  %q = getelementptr float, float* %p, i32 %i
  %vq = bitcast float* %q to <2 x float>*
  %x = load <2 x float>, <2 x float>* %vq, align 4
  %xd = fpext <2 x float> %x to <2 x double>
  %xs = fmul <2 x double> %xd, %sc
  %y = fsub <2 x double> %xs, %mx
  %t0 = fmul <2 x double> %y, %cLog2e
  %t = fadd <2 x double> %t0, %cMagic
  %kf = fsub <2 x double> %t, %cMagic
  %a0 = fmul <2 x double> %kf, %cLn2Hi
  %a1 = fsub <2 x double> %y, %a0
  %a2 = fmul <2 x double> %kf, %cLn2Lo
  %r = fsub <2 x double> %a1, %a2
  ; 1 + r (1 + r (0.5 + r (c3 + r (c4 + r (c5 + r (c6 + r c7))))))
  %h7 = fmul <2 x double> %r, %c7
  %h6 = fadd <2 x double> %c6, %h7
  %h6r = fmul <2 x double> %r, %h6
  %h5 = fadd <2 x double> %c5, %h6r
  %h5r = fmul <2 x double> %r, %h5
  %h4 = fadd <2 x double> %c4, %h5r
  %h4r = fmul <2 x double> %r, %h4
  %h3 = fadd <2 x double> %c3, %h4r
  %h3r = fmul <2 x double> %r, %h3
  %h2 = fadd <2 x double> %cHalf, %h3r
  %h2r = fmul <2 x double> %r, %h2
  %h1 = fadd <2 x double> %cOne, %h2r
  %h1r = fmul <2 x double> %r, %h1
  %poly = fadd <2 x double> %cOne, %h1r
  ; k = bits(t) - bits(1.5 * 2^52); 2^k1 * 2^k2 with k1 = k >> 1, k2 = k - k1
  %tb = bitcast <2 x double> %t to <2 x i64>
  %kk = sub <2 x i64> %tb, %magicBits
  %ka = ashr <2 x i64> %kk, <i64 1, i64 1>
  %kb = sub <2 x i64> %kk, %ka
  %ea = add <2 x i64> %ka, %bias
  %eb = add <2 x i64> %kb, %bias
  %pa = shl <2 x i64> %ea, <i64 52, i64 52>
  %pb = shl <2 x i64> %eb, <i64 52, i64 52>
  %powa = bitcast <2 x i64> %pa to <2 x double>
  %powb = bitcast <2 x i64> %pb to <2 x double>
  %e0a = fmul <2 x double> %poly, %powa
  %e0 = fmul <2 x double> %e0a, %powb
  ; k < -1074 (POW2 holds 0 there) gives 0
  %tiny = icmp slt <2 x i64> %kk, %kmin
  %e1 = select <2 x i1> %tiny, <2 x double> zeroinitializer, <2 x double> %e0
  ; y >= -745.2: e; NaN: y; else 0
  %inRange = fcmp oge <2 x double> %y, %cLimit
  %isNan = fcmp uno <2 x double> %y, %y
  %low = select <2 x i1> %isNan, <2 x double> %y, <2 x double> zeroinitializer
  %e = select <2 x i1> %inRange, <2 x double> %e1, <2 x double> %low
  %ef = fptrunc <2 x double> %e to <2 x float>
  store <2 x float> %ef, <2 x float>* %vq, align 4
  %l0 = extractelement <2 x double> %e, i32 0
  %l1 = extractelement <2 x double> %e, i32 1
  %sum1 = fadd double %sum, %l0
  %sum2 = fadd double %sum1, %l1
  %i1 = add i32 %i, 2
  %more = icmp slt i32 %i1, %n
  br i1 %more, label %loop, label %done
done:
  %res = phi double [0.0, %entry], [%sum2, %loop]
  ret double %res
}
