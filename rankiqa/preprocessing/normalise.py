"""Each network family's input convention, from uint8-range RGB ``[B, H, W, 3]``: kept with the
networks so that training, export and ``predict`` always agree."""

from rankiqa.compat import tf

# Caffe-VGG convention (BGR order, per-channel ImageNet mean) that VGG weights were trained with.
VGG_BGR_MEAN = (104.007, 116.669, 122.679)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def inception(images):
    """[-1, 1], the slim resnet_v2 ImageNet convention."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def caffe_vgg(images):
    """BGR minus the Caffe ImageNet mean."""
    bgr = tf.reverse(tf.cast(images, tf.float32), axis=[-1])
    return bgr - tf.constant(VGG_BGR_MEAN, dtype=tf.float32)


def imagenet_mean_std(images):
    """RGB in [0, 1] normalised by the ImageNet mean and std (torchvision's convention, which
    EfficientNet-Lite's and DINOv2's weights expect)."""
    images = tf.cast(images, tf.float32) / 255.0
    return (images - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)
